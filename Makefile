# Two commands set everything up on a fresh machine (see README.md):
#   make echo   runs the echo example on ws://127.0.0.1:3000/connect
#   make test   runs every test: mypy, pytest and the Autobahn suites (cases 1.* to 10.*)
#   make test-full  the same plus the compression cases 12.* and 13.* (what CI runs)
#   make bench  the echo benchmark against the peer libraries
#   make docs   the documentation site, into docs/_build/html (warnings are errors)
#   make screenshot  refreshes docs/images/chat.png (the chat in headless Chromium)
#   make fuzz   every fuzz target for FUZZ_SECONDS each (default 30 minutes; fuzz/README.md)
#   make coverage  branch coverage of trio_gws from the suite (scripts/coverage.sh)

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: install components echo test test-full bench docs screenshot fuzz fuzz-merge coverage clean

install: $(STAMP)

# setup.py and the C source too: the editable install compiles trio_gws._speedups only
# when it runs, so a change to either reinstalls.
$(STAMP): pyproject.toml setup.py trio_gws/_speedups.c
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[test,docs,fuzz]"
	touch $(STAMP)

# The real components the tests talk to (proxies, nginx, Redis, a browser, Node's ws):
# idempotent and quick once installed, so every test run calls it.
components:
	bash scripts/install-components.sh

echo: $(STAMP)
	$(PY) examples/echo.py

test: $(STAMP) components
	PYTHON=$(PY) bash scripts/test.sh

test-full: $(STAMP) components
	PYTHON=$(PY) bash scripts/test.sh --full

# The documentation site: open docs/_build/html/docs/index.html (scripts/build-docs.sh).
docs: $(STAMP)
	PYTHON=$(PY) bash scripts/build-docs.sh

# The echo benchmark against the peer libraries (about 30 minutes with tcpkali; see
# benchmarks/README.md: tcpkali is found on PATH, TCPKALI= or benchmarks/.tcpkali/bin)
bench: $(STAMP)
	bash scripts/bench-tools.sh
	$(PY) -m pip install --quiet -e ".[bench]"
	$(PY) benchmarks/run.py

# The README's picture of the chat: tests/test_chat_browser.py's two-user flow in
# headless Chromium, its screenshot kept instead of thrown away.
screenshot: $(STAMP) components
	mkdir -p docs/images
	GWS_CHAT_SCREENSHOT=$(CURDIR)/docs/images/chat.png $(PY) -m pytest -q -p no:cacheprovider \
		tests/test_chat_browser.py -k test_two_users_chat_in_the_browser

# Long coverage-guided runs, niced, two targets at a time; new inputs stay in the ignored
# fuzz/.corpus/ (FUZZ_SECONDS, FUZZ_JOBS, FUZZ_TARGETS: see scripts/fuzz.sh).
fuzz: $(STAMP)
	PYTHON=$(PY) bash scripts/fuzz.sh $(FUZZ_TARGETS)

# Promote what the long runs found into the committed seeds: only inputs that add
# coverage are copied (libFuzzer's merge); review and commit fuzz/corpus/ afterwards.
fuzz-merge: $(STAMP)
	PYTHON=$(PY) bash scripts/fuzz.sh --merge $(FUZZ_TARGETS)

# Branch coverage: the suite (hostile tests aside) and its pure-Python pass, combined;
# the lines never run are listed, and shown in coverage-html/.
coverage: $(STAMP) components
	$(PY) -m pip install --quiet -e ".[coverage]"
	PYTHON=$(PY) bash scripts/coverage.sh

clean:
	rm -rf $(VENV) autobahn/reports .pytest_cache .mypy_cache docs/_build coverage-html
