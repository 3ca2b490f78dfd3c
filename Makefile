# Two entry points for a fresh machine: `make run` (embedded default on a sample clip) and `make test`.
SHELL := /bin/bash
.SHELLFLAGS := -o pipefail -ec
VENV ?= .venv
PY := $(VENV)/bin/python
OUT ?= out

.PHONY: run test bench clean chromium

$(VENV)/.installed: pyproject.toml constraints.txt
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q -c constraints.txt -e '.[test]' 2>&1 | { grep -v 'is ignored: it is neither' || true; }
	touch $@

run: $(VENV)/.installed
	$(VENV)/bin/vqmon sample $(OUT)/sample
	$(VENV)/bin/vqmon score $(OUT)/sample/distorted.mp4 --ref $(OUT)/sample/reference.mp4 --model liqe --out $(OUT)/results --report

test: $(VENV)/.installed chromium
	$(VENV)/bin/pytest -q

# the browser tests (report, status page) render in Debian's headless chromium; without it they skip
chromium:
	@command -v chromium >/dev/null || (apt-get update -q && apt-get install -y -q --no-install-recommends chromium) >/dev/null \
		|| echo "chromium could not be installed: the browser tests will skip"

bench: $(VENV)/.installed
	$(PY) bench/score_throughput.py

clean:
	rm -rf $(OUT) $(VENV)
