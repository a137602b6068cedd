"""Vision pipeline: image data decoded once (data), batched views on the device (transforms), the ViT
export of a pretrained encoder with its image processor (export), and MAE reconstruction pictures (pictures)."""
