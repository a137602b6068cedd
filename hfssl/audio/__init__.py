"""Speech data: decoding any audio file to 16 kHz mono (decode.py), prepared and cropped clips (data.py)."""
