# The two commands: `make test` and `make demo` (see README.md).
# Both install what they need on a fresh Debian 12 machine.
SHELL := /bin/bash
VENV := .venv
PYTHON ?= python3
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)
export ANSIBLE_CONFIG := $(CURDIR)/ansible.cfg
export ANSIBLE_COLLECTIONS_PATH := $(CURDIR)/.collections
# Where the test beds keep their made-once material (read by the test inventories).
export HPCGW_TESTBED_DIR := $(CURDIR)/.testbed
# The demo's published ports, on 127.0.0.1 only.
DEMO_HTTPS_PORT ?= 8443
DEMO_GLOBUS_PORT ?= 9443
# uv installs requirements-test.txt in about 15 s (pip: about 70 s).
UV_VERSION := 0.13.9
COLLECTION_LINK := .collections/ansible_collections/hpcgateway/jupyterhub

.PHONY: test demo demo-down host venv images lint docs unit setup-checks molecule clean help

help:
	@echo "make test       install, lint, unit tests, molecule (the whole gateway on the test bed)"
	@echo "make demo       install, build images, start the demo and run site.yml -i inventories/demo"
	@echo "make demo-down  remove the demo containers"
	@echo "make docs       rewrite the roles' README variable tables from meta/argument_specs.yml"

test:
	@tests/run-suite

host:
	tests/testbed/host-setup.sh

venv: $(VENV)/.installed $(COLLECTION_LINK)

$(VENV)/.installed: requirements.txt requirements-test.txt
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet uv==$(UV_VERSION)
	$(VENV)/bin/uv pip install --quiet --python $(VENV)/bin/python -r requirements-test.txt
	touch $@

# The repo is the collection hpcgateway.jupyterhub, findable by that name
# through this link (committed; ansible.cfg's collections_path). Remade if lost.
$(COLLECTION_LINK):
	mkdir -p $(dir $@)
	ln -sfn ../../.. $@

images:
	tests/testbed/build-images.sh

# ansible-test's own virtual environments (kept in ~/.ansible/test), made
# once with the network; the lint lane of `make test` makes them while the
# images build, off the install path.
$(VENV)/.sanity-primed: $(VENV)/.installed tests/sanity/run
	tests/sanity/run --prime
	touch $@

# tests/sanity/run: ansible-test sanity and antsibull-docs on the collection
# as shipped, offline once primed; it says which sanity tests it leaves out
# and why.
lint: venv $(VENV)/.sanity-primed
	yamllint --strict .
	ruff check .
	ansible-lint
	tests/sanity/run

# Each role's README variable table, from its meta/argument_specs.yml (aar-doc;
# tests/unit/test_role_readmes.py fails while one is stale).
docs: venv
	tests/docs/role_readmes.py

# Also measures the hub package's coverage; prints (and holds at 90 %) that of
# the spawner and its gate, whose lifecycle the unit tests prove.
COVERED := python/hpcgw_hub/spawner.py,python/hpcgw_hub/gate.py
unit: venv
	pytest -q tests/unit --cov=hpcgw_hub --cov-report=
	coverage report --include='$(COVERED)' --fail-under=90

# Bad setup (no docker, no disk, a port taken, leftovers) against the real engine.
setup-checks: venv images
	pytest -q tests/setup

# As README says a user runs it from the repo root: without this Makefile's
# environment (molecule.yml gives every step what it needs).
molecule: venv images
	env -u ANSIBLE_CONFIG -u ANSIBLE_COLLECTIONS_PATH -u HPCGW_TESTBED_DIR molecule test

demo: host venv images
	ansible-playbook tests/testbed/up.yml -e testbed_name=demo \
	  -e testbed_publish_hub_https=127.0.0.1:$(DEMO_HTTPS_PORT) -e testbed_publish_globus=127.0.0.1:$(DEMO_GLOBUS_PORT)
	ansible-playbook -i inventories/demo tests/testbed/prepare.yml -e testbed_name=demo
	ansible-playbook -i inventories/demo site.yml
	@tests/testbed/demo-banner $(DEMO_HTTPS_PORT)

demo-down: venv
	ansible-playbook tests/testbed/down.yml -e testbed_name=demo

clean: demo-down
	ansible-playbook tests/testbed/down.yml -e testbed_name=molecule
	rm -rf .testbed
