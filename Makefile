# The two commands of README.md: `make demo` and `make test`.  Both install
# what is missing (a .venv with the project, the Debian tools the stack and
# its tests use) and are safe to repeat.
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-$(shell cat pyproject.toml | cksum | cut -d' ' -f1)
PYTEST := $(PY) -m pytest
# command:package pairs, installed with apt only when the command is missing
DEBS   := ip:iproute2 ping:iputils-ping curl:curl tcpdump:tcpdump iptables:iptables openssl:openssl redis-server:redis-server mosquitto:mosquitto dnsmasq:dnsmasq

.PHONY: demo test unit e2e faults bench install debs clean

install: $(STAMP) debs

$(STAMP): pyproject.toml
	@test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check -e '.[test]' --config-settings editable_mode=compat
	@rm -f $(VENV)/.installed-*; touch $@

debs:
	@missing=""; for pair in $(DEBS); do \
	    command -v $${pair%%:*} >/dev/null 2>&1 || missing="$$missing $${pair##*:}"; done; \
	if [ -n "$$missing" ]; then \
	    echo "installing Debian packages:$$missing"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	fi

demo: install
	$(VENV)/bin/netstack demo

# pytest's exit code 5 means "no tests collected": not a failure by itself.
define run_pytest
	$(PYTEST) $(1); rc=$$?; if [ $$rc -eq 5 ]; then echo "no tests collected"; exit 0; fi; exit $$rc
endef

test: install
	@$(call run_pytest,-q -p no:cacheprovider tests/unit tests/e2e)

unit: install
	@$(call run_pytest,-q tests/unit)

e2e: install
	@$(call run_pytest,-q tests/e2e)

# issue 6's fault suite at full size; prints a recovery table per service and signal and
# writes it as JSON to NETSTACK_FAULT_REPORT (default: fault-report.json in pytest's tmp dir)
faults: install
	@$(call run_pytest,-q -p no:cacheprovider tests/faults)

clean:
	rm -rf $(VENV) *.egg-info
