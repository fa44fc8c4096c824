# Aula — the two commands. Needs only Python 3.11 on the machine; everything else comes from the lock file.
#   make run    migrate, seed the demo and start web (uvicorn), Celery worker and beat; Ctrl-C stops all
#   make test   run the whole test suite against real PostgreSQL and Redis
PYTHON ?= python3.11
UV_VERSION := 0.13.9
VENV := .venv
TOOLS := .tools

.PHONY: run test env clean

$(TOOLS)/bin/uv:
	$(PYTHON) -m venv $(TOOLS)
	$(TOOLS)/bin/python -m pip install --quiet "uv==$(UV_VERSION)"

$(VENV)/.synced: pyproject.toml uv.lock $(TOOLS)/bin/uv
	UV_PROJECT_ENVIRONMENT=$(VENV) $(TOOLS)/bin/uv sync --locked --python $(PYTHON) --quiet
	touch $@

env: $(VENV)/.synced

run: env
	$(VENV)/bin/python -m config.devservers run

test: env
	$(VENV)/bin/python -m config.devservers test $(ARGS)

clean:
	rm -rf $(VENV) $(TOOLS) .aula
