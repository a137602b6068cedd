# The two README commands. Each sets up what it needs in .venv.
PY ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup pretrain test test-slow lint clean speech-data emoji-data

$(STAMP): pyproject.toml
	@test -n "$(PY)" || { echo "need python3.11 (or python3 >= 3.10) on PATH"; exit 1; }
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install --upgrade pip
	$(BIN)/python -m pip install -e ".[dev]"
	touch $(STAMP)

setup: $(STAMP)

# CPU threads of `make pretrain`: your OMP_NUM_THREADS when it is set, else every core here (`accelerate launch`
# alone gives a process on a CPU-only machine one thread). `make pretrain THREADS=4` sets it.
THREADS ?= $(or $(OMP_NUM_THREADS),$(shell nproc 2>/dev/null || echo 1))

# The main job on the embedded corpus; each run writes a new runs/bert_mlm-<time> folder.
pretrain: $(STAMP)
	$(BIN)/accelerate launch --num_processes 1 --num_machines 1 --mixed_precision no --dynamo_backend no \
		--num_cpu_threads_per_process $(THREADS) \
		recipes/bert_mlm.py --output_dir runs/bert_mlm-$$(date +%Y%m%d-%H%M%S) $(ARGS)

test: $(STAMP)
	$(BIN)/python -m pytest -q -m "not slow" $(PYTEST_ARGS)

# End-to-end runs of several minutes; CI runs them after `make test`.
test-slow: $(STAMP)
	$(BIN)/python -m pytest -q -m slow $(PYTEST_ARGS); rc=$$?; [ $$rc -eq 5 ] && exit 0 || exit $$rc

# Offline speech made with espeak-ng + sox (installed here with apt-get): unlabelled Austen speech, keywords and
# transcribed sentences split by held-out voices, under $(SPEECH_DIR) (benchmarks/data/make_speech.py).
SPEECH_DIR ?= runs/speech-data
SPEECH_MINUTES ?= 30
speech-data: $(STAMP)
	command -v espeak-ng >/dev/null && command -v sox >/dev/null || apt-get install -y espeak-ng sox
	$(BIN)/python benchmarks/data/make_speech.py unlabelled --out $(SPEECH_DIR)/unlabelled --minutes $(SPEECH_MINUTES)
	$(BIN)/python benchmarks/data/make_speech.py keywords --out $(SPEECH_DIR)/keywords --clips_per_voice 1
	$(BIN)/python benchmarks/data/make_speech.py sentences --out $(SPEECH_DIR)/sentences --count 200

# Image-caption pairs for recipes/clip.py: every emoji of the Noto Color Emoji font with its name and aliases.
EMOJI_DIR ?= runs/emoji-data
EMOJI_SIZE ?= 64
emoji-data: $(STAMP)
	test -f /usr/share/fonts/truetype/noto/NotoColorEmoji.ttf || apt-get install -y fonts-noto-color-emoji
	$(BIN)/python benchmarks/data/make_emoji_pairs.py --out $(EMOJI_DIR) --size $(EMOJI_SIZE)

lint: $(STAMP)
	$(BIN)/ruff check hfssl recipes tests benchmarks

clean:
	rm -rf $(VENV) runs .pytest_cache
