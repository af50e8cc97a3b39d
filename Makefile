# Two commands for a new user: `make serve` and `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
CONFIG ?= assets/configs/Config.toml
# apt waits up to 10 minutes for another apt or dpkg (an unattended upgrade) to let go of its lock
APT_WAIT := -o DPkg::Lock::Timeout=600

.PHONY: serve test setup vulkan browser haproxy clean

setup: $(VENV)/.installed vulkan

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	touch $@

# wgpu needs a Vulkan (or Metal/DX12/GL) driver; without a GPU driver we install Mesa's
# software Vulkan (lavapipe) so everything still runs, slowly.
vulkan: $(VENV)/.installed
	@$(PY) -m ai00_trio adapters >/dev/null 2>&1 || { \
		echo "no GPU adapter found: installing Mesa's software Vulkan driver (mesa-vulkan-drivers)"; \
		$(SUDO) apt-get $(APT_WAIT) update -qq && $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get $(APT_WAIT) install -y -qq mesa-vulkan-drivers; \
		$(PY) -m ai00_trio adapters; }

serve: setup
	$(PY) -m ai00_trio serve --config $(CONFIG)

# The web UI tests (tests/test_webui.py) drive Debian's Chromium, headless, through Playwright
# for Python (from the `test` extra); Playwright's own browser downloads are never used.
browser:
	@[ -x /usr/bin/chromium ] || { \
		echo "installing Debian's chromium for the web UI tests"; \
		$(SUDO) apt-get $(APT_WAIT) update -qq && $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get $(APT_WAIT) install -y -qq chromium; }

# Several servers behind HAProxy (deploy/haproxy.cfg; tests/test_replicas.py, `python -m ai00_trio
# replicas`) use Debian's haproxy.
haproxy:
	@command -v haproxy >/dev/null || { \
		echo "installing Debian's haproxy for the replicas tests"; \
		$(SUDO) apt-get $(APT_WAIT) update -qq && $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get $(APT_WAIT) install -y -qq haproxy; }

test: setup browser haproxy
	$(PY) -m pytest -q

clean:
	rm -rf $(VENV)
