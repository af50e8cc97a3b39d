# Two commands for a new user: `make serve` and `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
CONFIG ?= assets/configs/Config.toml
# another apt or dpkg run (unattended upgrades) holds the lock: wait for it rather than fail
APT_GET := apt-get -o DPkg::Lock::Timeout=300

.PHONY: serve test setup vulkan browser clean

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
		$(SUDO) $(APT_GET) update -qq && $(SUDO) env DEBIAN_FRONTEND=noninteractive $(APT_GET) install -y -qq mesa-vulkan-drivers; \
		$(PY) -m ai00_trio adapters; }

serve: setup
	$(PY) -m ai00_trio serve --config $(CONFIG)

# The web UI tests (tests/test_webui.py) drive Debian's Chromium, headless, through Playwright
# for Python (from the `test` extra); Playwright's own browser downloads are never used.
browser:
	@[ -x /usr/bin/chromium ] || { \
		echo "installing Debian's chromium for the web UI tests"; \
		$(SUDO) $(APT_GET) update -qq && $(SUDO) env DEBIAN_FRONTEND=noninteractive $(APT_GET) install -y -qq chromium; }

test: setup browser
	$(PY) -m pytest -q

clean:
	rm -rf $(VENV)
