# The two commands a newcomer needs: `make run` and `make test`.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
INFRA_STAMP := $(VENV)/.infra-stamp
IMAGE ?= subscription-engine:local
IMAGE_BASE ?= subscription-engine-base:bookworm

.PHONY: run test fuzz lint infra image image-test bench-pay bench-renewals bench-faults task-defs clean

$(STAMP): setup.cfg pyproject.toml constraints.txt
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -c constraints.txt -e '.[dev]'
	touch $(STAMP)

run: $(STAMP)  ## the whole engine: API on :8000 (PORT), workers, scheduler
	$(PY) -m app.run

test: $(STAMP)  ## the whole suite against the local PostgreSQL, Redis and Kafka (but fuzz)
	$(PY) -m pytest -m "not fuzz"

fuzz: $(STAMP)  ## Schemathesis on every operation of the running engine (~1 min; .ci/run calls it)
	$(PY) -m pytest -m fuzz tests/e2e

lint: $(STAMP)
	$(VENV)/bin/ruff check app tests bench infra wsgi.py
	$(VENV)/bin/mypy app infra/processes.py

$(INFRA_STAMP): $(STAMP)
	$(PY) -m pip install -q -c constraints.txt -e '.[dev,infra]'
	touch $(INFRA_STAMP)

# The AWS stack (infra/), offline: synthesize every stack with cdk-nag's AwsSolutions pack as a
# validation plugin (an unacknowledged finding fails the synth), cfn-lint every template, then
# the aws_cdk.assertions tests. jsii runs on the machine's Node.js.
infra: export JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION = 1
infra: export JSII_SILENCE_WARNING_DEPRECATED_NODE_VERSION = 1
infra: $(INFRA_STAMP)
	rm -rf infra/cdk.out
	CDK_OUTDIR=infra/cdk.out $(PY) -m infra.app
	$(VENV)/bin/cfn-lint --config-file infra/cfnlintrc.yaml
	$(PY) -m pytest -q -p no:cacheprovider infra/tests

image: $(STAMP)  ## the container image, built offline on a local Debian base (docker/build.sh)
	docker/build.sh $(IMAGE) $(IMAGE_BASE) $(PY)

image-test: image  ## the image's api, worker, scheduler and relay: a /pay and its Kafka event
	SE_IMAGE=$(IMAGE) $(PY) -m pytest tests/image -q

task-defs: $(STAMP)  ## rewrite ecs-task-defs/*.json from infra/processes.py
	$(PY) -m infra.processes

bench-pay: $(STAMP)  ## the issue-11 /pay targets as ratios to a hello-world ceiling (~4 min)
	$(PY) bench/pay.py

bench-renewals: $(STAMP)  ## renewals end to end against a pgbench ceiling (N=30000, ~2 min)
	$(PY) bench/renewals.py

bench-faults: $(STAMP)  ## at most once under SIGKILLs and Redis/PostgreSQL restarts (own servers)
	$(PY) bench/faults.py

clean:
	rm -rf $(VENV) var .pytest_cache .mypy_cache .ruff_cache
