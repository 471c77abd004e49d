# `make demo` and `make test` work on a fresh machine: they create .venv and install into it first.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# The pair spandrel is tested with; override on machines that need another build (e.g. aarch64: torch==2.9.1 torchvision==0.24.1).
TORCH_SPEC ?= torch==2.14.1 torchvision==0.29.1
EXTRAS ?= faces,inpaint,extra-arches,web,ray,bench,dev,offline-models

.PHONY: demo test test-fast test-all serve screenshots bench clean-venv

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q $(TORCH_SPEC)
	$(PY) -m pip install -q -e ".[$(EXTRAS)]"
	touch $(STAMP)

demo: $(STAMP)
	$(PY) demo/demo.py

test: $(STAMP)
	$(PY) -m pytest -q -m "not long"

# under two minutes on two CPU cores: leaves out the tests marked slow (over ~5 s each) as well as the long ones
test-fast: $(STAMP)
	$(PY) -m pytest -q -m "not slow and not long"

# also the tests marked long (a real ESRGAN x4plus at 256x256 against its untiled output, ~3 min)
test-all: $(STAMP)
	$(PY) -m pytest -q

serve: $(STAMP)
	$(VENV)/bin/tessera serve

# the README's pictures of the web UI: each tab after a real job in headless chromium, English and Chinese
screenshots: $(STAMP)
	$(PY) -m pytest -q tests/test_web_screenshots.py
	mkdir -p docs/screenshots && cp test-artifacts/web/screens/*.png docs/screenshots/

# Real-ESRGAN's own tiler is a comparison point of bench/tiling.py only: basicsr 1.4.2 needs torch to build and
# pins packages the project does not use, so it is installed without its dependencies and kept out of the extras.
bench: $(STAMP)
	$(PY) -m pip install -q --no-deps --no-build-isolation realesrgan==0.3.0 basicsr==1.4.2
	$(PY) bench/tiling.py
	$(PY) bench/inpaint_quality.py
	$(PY) bench/inpaint_roi.py --full-probe 2048
	$(PY) bench/faces.py
	$(PY) bench/bigimage.py
	$(PY) bench/real_models.py

clean-venv:
	rm -rf $(VENV)
