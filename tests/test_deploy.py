"""docker-compose.yml and the Dockerfile name only what exists in the project.

No Docker engine runs here, so both files are parsed and every reference they make is
checked against the project: each `inv` command and option against the Typer app, each
`INV_*` variable against `Settings`, each URL against the service and port it names, each
published port against what its service listens on, each mounted file and COPY source
against the tree, the extra the image installs against pyproject.toml.  The API's
healthcheck path is asked of the application itself (`create_app` over a JSON file), its
Python snippet is run against a real server, and the load balancer's configuration is
read for the replicas it reaches and the address they trust.
"""

from __future__ import annotations

import itertools
import json
import re
import shlex
import stat
import subprocess
import tomllib
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import typer
import yaml
from typer.testing import CliRunner

from backends.registry import KNOWN_BACKENDS
from inventory_cli.cli import app
from inventory_cli.settings import Settings, load_settings

ROOT = Path(__file__).resolve().parent.parent
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())

# -- docker-compose.yml ----------------------------------------------------------------

# Compose's interpolation: $$ is a literal $, ${NAME:-default} / ${NAME-default} / $NAME.
_VARIABLE = re.compile(
    r"\$(?:(?P<escaped>\$)|\{(?P<braced>[^}]*)\}|(?P<named>[A-Za-z_][A-Za-z0-9_]*))"
)
_BRACED = re.compile(r"(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?+])(?P<arg>.*))?", re.S)


def _interpolate(node: Any, missing: list[str]) -> Any:
    """The file as Compose reads it with no .env: each variable becomes its default."""
    if isinstance(node, dict):
        return {key: _interpolate(value, missing) for key, value in node.items()}
    if isinstance(node, list):
        return [_interpolate(item, missing) for item in node]
    if not isinstance(node, str):
        return node

    def replace(match: re.Match[str]) -> str:
        if match["escaped"]:
            return "$"
        parsed = _BRACED.fullmatch(match["braced"] or match["named"] or "")
        assert parsed, f"bad interpolation {match[0]!r}"
        if parsed["op"] in (":-", "-"):
            return parsed["arg"]
        missing.append(match[0])
        return ""

    return _VARIABLE.sub(replace, node)


_MISSING: list[str] = []
_RAW_COMPOSE: dict[str, Any] = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
COMPOSE: dict[str, Any] = _interpolate(_RAW_COMPOSE, _MISSING)
SERVICES: dict[str, dict[str, Any]] = COMPOSE["services"]
BUILT = sorted(name for name, service in SERVICES.items() if "build" in service)


def _words(command: str | list[str] | None) -> list[str]:
    if command is None:
        return []
    return shlex.split(command) if isinstance(command, str) else [str(w) for w in command]


def _environment(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {key: str(value) for key, value in env.items()}


def _depends_on(service: dict[str, Any]) -> dict[str, str]:
    needs = service.get("depends_on") or {}
    if isinstance(needs, list):
        return dict.fromkeys(needs, "service_started")
    return {name: (spec or {}).get("condition", "service_started") for name, spec in needs.items()}


def _mounts(service: dict[str, Any]) -> list[tuple[str, str]]:
    """(source, target) of each volume entry, short or long syntax."""
    found = []
    for entry in service.get("volumes") or []:
        if isinstance(entry, dict):
            found.append((str(entry.get("source", "")), str(entry["target"])))
        else:
            source, _, rest = str(entry).partition(":")
            found.append((source, rest.split(":")[0]) if rest else ("", source))
    return found


def _image_name(service: dict[str, Any]) -> str:
    """postgres, redis, kafka, ...: the image's repository without registry or tag."""
    return str(service.get("image", "")).rsplit("/", 1)[-1].split("@")[0].split(":")[0]


def _kafka_listeners(value: str) -> dict[str, tuple[str, int]]:
    """KAFKA_LISTENERS-style `NAME://host:port,...` -> {NAME: (host, port)}."""
    found = {}
    for item in value.split(","):
        name, _, address = item.partition("://")
        host, _, port = address.rpartition(":")
        found[name] = (host, int(port))
    return found


def _option_value(words: list[str], option: str) -> str | None:
    for i, word in enumerate(words):
        if word == option and i + 1 < len(words):
            return words[i + 1]
        if word.startswith(option + "="):
            return word.split("=", 1)[1]
    return None


def _listens_on(name: str) -> set[int]:
    """The container ports a service accepts connections on, from its own configuration."""
    service = SERVICES[name]
    words = _words(service.get("command"))
    if "build" in service:  # the inv image: a server (`inv serve --port N`), a worker's metrics
        inv_words = _inv_words(service)
        ports = [_option_value(inv_words, option) for option in ("--port", "--metrics-port")]
        return {int(port) for port in ports if port}
    image = _image_name(service)
    if image == "nginx":
        return {
            int(port) for port in re.findall(r"^\s*listen\s+(?:[\d.]+:)?(\d+)", _nginx(name), re.M)
        }
    if image == "postgres":
        settings = [w for w in words if w.startswith("port=")]
        return {int(settings[-1].split("=")[1]) if settings else 5432}
    if image == "redis":
        port = _option_value(words, "--port")
        return {int(port) if port else 6379}
    if image == "kafka":
        env = _environment(service)
        return {port for _, port in _kafka_listeners(env["KAFKA_LISTENERS"]).values()}
    raise AssertionError(f"{name}: no rule for the ports image {service.get('image')} opens")


def _host_and_ports(entry: str | dict[str, Any]) -> tuple[str, int]:
    """A `ports` entry -> (ip:host port, container port)."""
    if isinstance(entry, dict):
        return f"{entry.get('host_ip', '')}:{entry.get('published')}", int(entry["target"])
    published, _, target = str(entry).rpartition(":")
    return published, int(target.split("/")[0])


def _is_one_shot(name: str) -> bool:
    return str(SERVICES[name].get("restart", "no")) == "no"


def _nginx(name: str) -> str:
    """The configuration an nginx service runs: the file mounted over nginx.conf."""
    mounted = dict((target, source) for source, target in _mounts(SERVICES[name]))
    source = mounted.get("/etc/nginx/nginx.conf")
    assert source, f"{name} mounts no /etc/nginx/nginx.conf"
    text = _source_path(source).read_text()
    return re.sub(r"#[^\n]*", "", text)  # comments dropped


def _servers() -> list[str]:
    """The services that run `inv serve`."""
    return [name for name in BUILT if _inv_words(SERVICES[name])[:1] == ["serve"]]


# -- Dockerfile ------------------------------------------------------------------------


def _dockerfile() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) in order; continuation lines joined, comments dropped."""
    instructions: list[tuple[str, str]] = []
    pending = ""
    for line in (ROOT / "Dockerfile").read_text().splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        keyword, _, args = (pending + stripped).partition(" ")
        instructions.append((keyword.upper(), args.strip()))
        pending = ""
    assert not pending, "the Dockerfile ends in a continuation line"
    return instructions


DOCKERFILE = _dockerfile()


def _final_stage() -> list[tuple[str, str]]:
    starts = [i for i, (keyword, _) in enumerate(DOCKERFILE) if keyword == "FROM"]
    return DOCKERFILE[starts[-1] :]


def _exec_form(args: str) -> list[str]:
    """An ENTRYPOINT/CMD: the JSON (exec) form, or the words of the shell form."""
    if args.startswith("["):
        words = json.loads(args)
        assert isinstance(words, list)
        return [str(w) for w in words]
    return ["/bin/sh", "-c", args]


def _last(keyword: str) -> list[str]:
    found = [args for k, args in _final_stage() if k == keyword]
    return _exec_form(found[-1]) if found else []


def _copies() -> list[tuple[str, list[str]]]:
    """(instruction, sources) of each COPY/ADD from the build context (not --from=)."""
    found = []
    for keyword, args in DOCKERFILE:
        if keyword not in ("COPY", "ADD"):
            continue
        words = _exec_form(args) if args.startswith("[") else shlex.split(args)
        flags = [w for w in words if w.startswith("--")]
        paths = [w for w in words if not w.startswith("--")]
        if any(flag.startswith("--from=") for flag in flags):
            continue
        found.append((f"{keyword} {args}", paths[:-1]))
    return found


def _dockerignore() -> list[str]:
    lines = (ROOT / ".dockerignore").read_text().splitlines()
    return [line.strip() for line in lines if line.strip() and not line.startswith("#")]


def _glob_regex(pattern: str) -> re.Pattern[str]:
    """A .dockerignore pattern (Go's filepath.Match, plus `**`), anchored at the context."""
    pattern = pattern.strip("/")
    out, i = "", 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out, i = out + "(?:.*/)?", i + 3
        elif pattern.startswith("**", i):
            out, i = out + ".*", i + 2
        elif pattern[i] == "*":
            out, i = out + "[^/]*", i + 1
        elif pattern[i] == "?":
            out, i = out + "[^/]", i + 1
        elif pattern[i] == "[":
            end = pattern.index("]", i)
            out, i = out + "[" + pattern[i + 1 : end].replace("!", "^", 1) + "]", end + 1
        else:
            out, i = out + re.escape(pattern[i]), i + 1
    return re.compile(out)


def _ignored(path: str, patterns: list[str]) -> bool:
    """Whether docker leaves `path` (relative to the context) out of the build context."""
    parts = path.strip("/").split("/")
    prefixes = ["/".join(parts[:n]) for n in range(1, len(parts) + 1)]
    ignored = False
    for pattern in patterns:
        negated = pattern.startswith("!")
        regex = _glob_regex(pattern.lstrip("!"))
        if any(regex.fullmatch(prefix) for prefix in prefixes):
            ignored = not negated
    return ignored


def _source_path(source: str) -> Path:
    return ROOT / source.removeprefix("./")


# -- inv commands ----------------------------------------------------------------------


def _inv_words(service: dict[str, Any]) -> list[str]:
    """The arguments `inv` gets in a service built from the Dockerfile."""
    entrypoint = _words(service.get("entrypoint")) or _last("ENTRYPOINT")
    command = _words(service.get("command")) if "command" in service else _last("CMD")
    assert entrypoint == ["inv"], f"the entrypoint {entrypoint} does not run inv"
    return command


def _inv_in_shell(test: list[str]) -> list[list[str]]:
    """The `inv ...` calls in a healthcheck test: `inv` in command position only."""
    if not test or test[0] == "NONE":
        return []
    if test[0] == "CMD":
        words = test[1:]
        return [words[1:]] if words and Path(words[0]).name == "inv" else []
    lexer = shlex.shlex(" ".join(test[1:]), posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    simple: list[list[str]] = [[]]
    for token in lexer:
        if token and set(token) <= set("&|;()"):  # an operator ends a simple command
            simple.append([])
        else:
            simple[-1].append(token)
    calls = []
    for words in simple:
        while words and (words[0] == "exec" or re.fullmatch(r"[A-Za-z_]\w*=.*", words[0])):
            words = words[1:]
        if words and Path(words[0]).name == "inv":
            calls.append(words[1:])
    return calls


def _inv_calls() -> list[tuple[str, list[str]]]:
    calls = [("Dockerfile CMD", _last("CMD"))]
    for name in BUILT:
        calls.append((f"{name} command", _inv_words(SERVICES[name])))
    for name, service in SERVICES.items():
        test = (service.get("healthcheck") or {}).get("test") or []
        test = ["CMD-SHELL", test] if isinstance(test, str) else test
        calls.extend((f"{name} healthcheck", args) for args in _inv_in_shell(test))
    return calls


INV_CALLS = _inv_calls()


def _split_command(args: list[str]) -> tuple[list[str], list[str]]:
    """`inv` arguments -> (root options and the command path, the command's arguments)."""
    command: Any = typer.main.get_command(app)
    path: list[str] = []
    i = 0
    while i < len(args):
        word = args[i]
        if word.startswith("-") and not path:  # a root option, with its value if it takes one
            option = next((p for p in command.params if word.split("=")[0] in p.opts), None)
            takes_value = option is not None and not getattr(option, "is_flag", True)
            i += 2 if takes_value and "=" not in word else 1
            continue
        if word in (getattr(command, "commands", None) or {}):
            command = command.commands[word]
            path.append(word)
            i += 1
            continue
        break
    return path, args[i:]


# -- tests: the compose file -----------------------------------------------------------


def test_compose_has_the_services_of_the_issue() -> None:
    assert "version" not in COMPOSE, "the compose spec has no version key"
    assert set(SERVICES) >= {
        "postgres",
        "postgres-replica",
        "redis",
        "kafka",
        "init",
        "worker-1",
        "worker-2",
        "api",
        "lb",
    }
    workers = [name for name in BUILT if _inv_words(SERVICES[name])[:1] == ["worker"]]
    assert len(workers) >= 2
    assert _inv_words(SERVICES["init"]) == ["init"]
    assert _image_name(SERVICES["postgres"]) == _image_name(SERVICES["postgres-replica"])
    assert _image_name(SERVICES["postgres"]) == "postgres"
    assert _image_name(SERVICES["redis"]) == "redis"


def test_kafka_runs_in_kraft_mode() -> None:
    env = _environment(SERVICES["kafka"])
    assert "zookeeper" not in " ".join(SERVICES).lower()
    assert not [key for key in env if "ZOOKEEPER" in key]
    assert set(env["KAFKA_PROCESS_ROLES"].split(",")) == {"broker", "controller"}
    node = env["KAFKA_NODE_ID"]
    listeners = _kafka_listeners(env["KAFKA_LISTENERS"])
    for voter in env["KAFKA_CONTROLLER_QUORUM_VOTERS"].split(","):
        voter_id, _, address = voter.partition("@")
        host, _, port = address.rpartition(":")
        assert voter_id == node
        assert host == "kafka"
        assert ("", int(port)) in [
            listeners[n] for n in env["KAFKA_CONTROLLER_LISTENER_NAMES"].split(",")
        ]
    protocols = dict(
        item.split(":") for item in env["KAFKA_LISTENER_SECURITY_PROTOCOL_MAP"].split(",")
    )
    assert set(listeners) <= set(protocols)
    assert set(_kafka_listeners(env["KAFKA_ADVERTISED_LISTENERS"])) <= set(listeners)
    # a single node: internal topics cannot ask for more replicas than there are brokers
    assert env["KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR"] == "1"
    assert env["KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR"] == "1"


def test_every_variable_has_a_default() -> None:
    # No .env ships with the project: a variable without a default would be empty.
    assert _MISSING == []


@pytest.mark.parametrize("name", sorted(SERVICES))
def test_every_long_running_service_has_a_healthcheck(name: str) -> None:
    service = SERVICES[name]
    if _is_one_shot(name):
        assert name == "init", f"{name} is one-shot (restart: no); only init should be"
        return
    healthcheck = service.get("healthcheck") or {}
    test = healthcheck.get("test")
    assert test, f"{name} has no healthcheck"
    assert not healthcheck.get("disable")
    assert isinstance(test, list) and test[0] in ("CMD", "CMD-SHELL"), test
    assert len(test) >= 2 and all(str(word).strip() for word in test[1:])


def test_depends_on_names_services_and_conditions_they_can_meet() -> None:
    for name, service in SERVICES.items():
        for needed, condition in _depends_on(service).items():
            assert needed in SERVICES, f"{name} depends on {needed}, which is not a service"
            if condition == "service_healthy":
                assert SERVICES[needed].get("healthcheck"), f"{needed} has no healthcheck"
            elif condition == "service_completed_successfully":
                assert _is_one_shot(needed), f"{needed} restarts, so it never completes"
            else:
                assert condition == "service_started", condition
    # and no cycle: every service can be started after the ones it needs
    started: set[str] = set()
    while len(started) < len(SERVICES):
        ready = {
            name
            for name, service in SERVICES.items()
            if name not in started and set(_depends_on(service)) <= started
        }
        assert ready, f"depends_on has a cycle among {sorted(set(SERVICES) - started)}"
        started |= ready


def test_workers_start_after_init_has_succeeded() -> None:
    for name in BUILT:
        if _inv_words(SERVICES[name])[:1] == ["worker"]:
            assert _depends_on(SERVICES[name])["init"] == "service_completed_successfully"
    init_needs = _depends_on(SERVICES["init"])
    assert init_needs["postgres"] == "service_healthy"
    assert init_needs["kafka"] == "service_healthy"


def test_volumes_are_declared_and_mounted_files_exist() -> None:
    declared = set(COMPOSE.get("volumes") or {})
    used: set[str] = set()
    for name, service in SERVICES.items():
        targets = [target for _, target in _mounts(service)]
        assert len(targets) == len(set(targets)), f"{name} mounts two things on one path"
        for source, target in _mounts(service):
            assert target.startswith("/"), f"{name}: {target} is not an absolute path"
            if source.startswith((".", "/", "~")):
                assert source.startswith("./"), f"{name}: {source} is outside the project"
                assert _source_path(source).exists(), f"{name} mounts {source}: no such file"
            elif source:
                assert source in declared, f"{name} uses volume {source}, not declared"
                used.add(source)
    assert used == declared, f"declared but unused: {sorted(declared - used)}"


def _bind_mounts() -> list[tuple[str, str, str]]:
    return [
        (name, source, target)
        for name, service in SERVICES.items()
        for source, target in _mounts(service)
        if source.startswith("./")
    ]


@pytest.mark.parametrize(
    ("name", "source", "target"), _bind_mounts(), ids=lambda v: str(v).removeprefix("./")
)
def test_mounted_scripts_are_executable_and_parse(name: str, source: str, target: str) -> None:
    path = _source_path(source)
    assert path.is_relative_to(ROOT / "deploy"), f"{source}: deployment files live in deploy/"
    if path.suffix != ".sh":
        return
    assert path.stat().st_mode & stat.S_IXUSR, f"{source} is not executable"
    shebang = path.read_text().splitlines()[0]
    assert shebang in ("#!/bin/sh", "#!/usr/bin/env bash", "#!/bin/bash"), shebang
    shell = "sh" if shebang == "#!/bin/sh" else "bash"
    checked = subprocess.run([shell, "-n", str(path)], capture_output=True, text=True)
    assert checked.returncode == 0, checked.stderr
    # every variable the script insists on (${NAME:?...}) is set in the service's environment
    required = set(re.findall(r"\$\{([A-Za-z_][A-Za-z0-9_]*):\?", path.read_text()))
    assert required <= set(_environment(SERVICES[name])), sorted(
        required - set(_environment(SERVICES[name]))
    )


def test_scripts_a_service_runs_are_mounted_into_it() -> None:
    for name, service in SERVICES.items():
        targets = {target for _, target in _mounts(service)}
        for program in (_words(service.get("entrypoint"))[:1], _words(service.get("command"))[:1]):
            if program and program[0].endswith(".sh"):
                assert program[0] in targets, f"{name} runs {program[0]}, which is not mounted"
    # the primary's script runs because it sits in the image's init folder
    assert any(
        target.startswith("/docker-entrypoint-initdb.d/")
        for _, target in _mounts(SERVICES["postgres"])
    )


def test_published_ports_are_unique_and_reach_a_listening_port() -> None:
    published: dict[str, str] = {}
    for name, service in SERVICES.items():
        listening = _listens_on(name)
        for entry in service.get("ports") or []:
            host, container = _host_and_ports(entry)
            assert container in listening, f"{name} publishes {container}, listens on {listening}"
            assert host not in published, f"{name} and {published[host]} both publish {host}"
            published[host] = name
    assert len(published) >= 4


def test_the_replica_streams_from_the_primary() -> None:
    primary, replica = SERVICES["postgres"], SERVICES["postgres-replica"]
    primary_flags = dict(w.split("=", 1) for w in _words(primary["command"]) if "=" in w)
    replica_flags = dict(w.split("=", 1) for w in _words(replica["command"]) if "=" in w)
    assert primary_flags["wal_level"] in ("replica", "logical")
    assert int(primary_flags["max_wal_senders"]) > 0
    # a standby refuses to start with a lower value of these than the primary's
    for setting in ("max_wal_senders", "max_connections", "max_worker_processes"):
        if setting in primary_flags:
            assert int(replica_flags.get(setting, 0)) >= int(primary_flags[setting]), setting
    primary_env, replica_env = _environment(primary), _environment(replica)
    assert replica_env["PRIMARY_HOST"] == "postgres"
    assert int(replica_env["PRIMARY_PORT"]) in _listens_on("postgres")
    for key in ("REPLICATION_USER", "REPLICATION_PASSWORD", "REPLICATION_SLOT"):
        assert replica_env[key] == primary_env[key], key
    assert _depends_on(replica)["postgres"] == "service_healthy"

    entrypoint = _source_path(
        next(s for s, t in _mounts(replica) if t == _words(replica["entrypoint"])[0])
    ).read_text()
    assert "pg_basebackup" in entrypoint
    assert re.search(r"--write-recovery-conf|\s-R\b", entrypoint), "no standby.signal (-R)"
    assert re.search(r"--wal-method[ =]stream|-X ?stream", entrypoint), "no -X stream"
    assert 'exec docker-entrypoint.sh "$@"' in entrypoint
    init = _source_path(
        next(s for s, t in _mounts(primary) if t.startswith("/docker-entrypoint-initdb.d/"))
    ).read_text()
    assert "REPLICATION" in init and "pg_create_physical_replication_slot" in init
    assert re.search(r"host replication \$REPLICATION_USER", init), "no pg_hba line"


#: Settings only a server reads: the API services may add these to the shared ones.
API_SETTINGS = {"INV_RATE_LIMIT_ANONYMOUS", "INV_RATE_LIMIT_TOKEN", "INV_ALLOWED_NETWORKS"}


def test_every_inv_container_gets_the_same_settings() -> None:
    shared = _environment(SERVICES["init"])
    assert shared["INV_BACKEND"] == "kafka"
    servers = _servers()
    for name in BUILT:
        env = _environment(SERVICES[name])
        # the same database, replicas, Redis, Kafka and group as init and the workers
        assert {k: env.get(k) for k in shared} == shared, name
        extra = set(env) - set(shared)
        assert extra <= (API_SETTINGS if name in servers else set()), (name, extra)


INV_VARIABLES = sorted(
    {
        key
        for service in SERVICES.values()
        for key in _environment(service)
        if key.startswith("INV_")
    }
)


@pytest.mark.parametrize("variable", INV_VARIABLES)
def test_every_inv_variable_is_a_setting(variable: str) -> None:
    fields = {name.lower() for name in Settings.model_fields}
    assert variable.removeprefix("INV_").lower() in fields, f"{variable} is not a Setting"


@pytest.mark.parametrize("name", ["init", "api"])
def test_the_inv_environment_loads_as_settings(
    name: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.chdir(tmp_path)  # no ./inv.toml
    env = _environment(SERVICES[name])
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    dumped = load_settings().model_dump()
    for key, value in env.items():
        field = key.removeprefix("INV_").lower()
        if field in dumped:
            got = dumped[field]
            got = got.get_secret_value() if hasattr(got, "get_secret_value") else got
            assert str(got) == value, key


def test_the_backend_it_names_is_registered_and_installed_in_the_image() -> None:
    backend = _environment(SERVICES["init"])["INV_BACKEND"]
    assert backend in KNOWN_BACKENDS, f"no backend {backend!r} in backends.registry"
    extra = KNOWN_BACKENDS[backend].extra
    assert extra is None or extra in _installed_extras()


def _urls(variable: str, value: str) -> list[tuple[str, str, int, str]]:
    """(scheme, host, port, the whole item) of each address in a setting's value."""
    found = []
    for item in value.split(","):
        if "://" in item:
            parts = urlsplit(item)
            assert parts.hostname and parts.port, f"{variable}: {item} names no host and port"
            found.append((parts.scheme, parts.hostname, parts.port, item))
        elif variable.endswith("_SERVERS"):
            host, _, port = item.rpartition(":")
            found.append(("kafka", host, int(port), item))
    return found


_SCHEME_IMAGES = {"postgresql": "postgres", "postgres": "postgres", "redis": "redis"}


def test_urls_name_services_and_ports_they_listen_on() -> None:
    checked = set()
    for name in BUILT:
        for variable, value in _environment(SERVICES[name]).items():
            if not variable.startswith("INV_"):
                continue
            for scheme, host, port, item in _urls(variable, value):
                assert host in SERVICES, f"{name}: {variable} names {host}, not a service"
                target = SERVICES[host]
                assert port in _listens_on(host), f"{variable}: {host} listens not on {port}"
                assert _image_name(target) == _SCHEME_IMAGES.get(scheme, scheme), item
                checked.add(variable)
                target_env = _environment(target)
                if _image_name(target) == "postgres":
                    parts = urlsplit(item)
                    assert parts.username == target_env["POSTGRES_USER"], item
                    assert parts.password == target_env["POSTGRES_PASSWORD"], variable
                    assert parts.path.lstrip("/") == target_env["POSTGRES_DB"], item
                if _image_name(target) == "kafka":
                    # clients reconnect to what the broker advertises: it must be this name
                    advertised = _kafka_listeners(target_env["KAFKA_ADVERTISED_LISTENERS"])
                    assert (host, port) in advertised.values(), (item, advertised)
    assert checked >= {
        "INV_DATABASE_URL",
        "INV_READ_DATABASE_URLS",
        "INV_REDIS_URL",
        "INV_KAFKA_BOOTSTRAP_SERVERS",
    }
    assert "postgres-replica" in _environment(SERVICES["init"])["INV_READ_DATABASE_URLS"]


@pytest.mark.parametrize(
    ("where", "args"), INV_CALLS, ids=[f"{w}: inv {' '.join(a)}" for w, a in INV_CALLS]
)
def test_every_inv_command_it_runs_exists(where: str, args: list[str]) -> None:
    path, rest = _split_command(args)
    words = list(itertools.takewhile(lambda word: not word.startswith("-"), rest))
    result = CliRunner().invoke(app, [*path, *words, "--help"])
    shown = " ".join(["inv", *path, *words, "--help"])
    assert result.exit_code == 0, f"{where}: {shown} exits {result.exit_code}: {result.output}"
    if path:
        assert f"inv {' '.join(path)}" in result.stdout, result.stdout
    command: Any = typer.main.get_command(app)
    for part in path:
        command = command.commands[part]
    if rest:
        assert path, f"{where}: {rest[0]!r} is not an inv command"
        assert rest[0].startswith("-") or not getattr(command, "commands", None), rest
    options = {opt for param in command.params for opt in param.opts}
    for word in rest:
        if word.startswith("--"):
            option = word.split("=", 1)[0]
            assert option in options, f"{where}: inv {' '.join(path)} has no {option}"
            assert option in result.stdout, f"{option} is not in inv {' '.join(path)} --help"


def test_inv_calls_are_found_in_command_position_only() -> None:
    assert _inv_in_shell(["CMD-SHELL", "pg_isready -U postgres -d inv"]) == []
    assert _inv_in_shell(["CMD-SHELL", "true && INV_X=1 exec /opt/inv/bin/inv status -f json"]) == [
        ["status", "-f", "json"]
    ]
    assert _inv_in_shell(["CMD", "inv", "status"]) == [["status"]]
    assert {where for where, _ in INV_CALLS} >= {"Dockerfile CMD", "init command"}


def test_the_worker_health_file_is_the_one_its_healthcheck_reads() -> None:
    workers = [name for name in BUILT if _inv_words(SERVICES[name])[:1] == ["worker"]]
    assert workers
    for name in workers:
        health_file = _option_value(_inv_words(SERVICES[name]), "--health-file")
        assert health_file, f"{name} runs its worker without --health-file"
        # the image runs as a non-root user: /tmp (or a volume) is where it may write
        volumes = [target for _, target in _mounts(SERVICES[name])]
        assert any(health_file.startswith(f"{d.rstrip('/')}/") for d in ["/tmp", *volumes])
        test = " ".join(SERVICES[name]["healthcheck"]["test"][1:])
        assert health_file in test, f"{name}'s healthcheck does not read {health_file}"


# -- tests: the Dockerfile -------------------------------------------------------------


def _installed_extras() -> set[str]:
    """The extras `pip install .[...]` installs, with those they pull in (inv[postgres])."""
    extras: set[str] = set()
    for keyword, args in DOCKERFILE:
        if keyword == "RUN" and "pip install" in args:
            for match in re.finditer(r"""["']?\.\[([^\]]+)\]["']?""", args):
                extras.update(e.strip() for e in match[1].split(","))
    optional = PYPROJECT["project"]["optional-dependencies"]
    pending = list(extras)
    while pending:
        for requirement in optional.get(pending.pop(), []):
            inner = re.fullmatch(r"inv\[([^\]]+)\]", requirement.replace(" ", ""))
            for extra in inner[1].split(",") if inner else []:
                if extra not in extras:
                    extras.add(extra)
                    pending.append(extra)
    return extras


def test_dockerfile_builds_on_a_slim_python_the_project_supports() -> None:
    stages: set[str] = set()
    for keyword, args in DOCKERFILE:
        if keyword != "FROM":
            continue
        words = [w for w in args.split() if not w.startswith("--")]
        image = words[0]
        if len(words) == 3 and words[1].upper() == "AS":
            stages.add(words[2].lower())
        if image.lower() in stages:
            continue
        assert image.endswith("-slim"), f"FROM {image} is not a slim image"
    final = next(args for keyword, args in reversed(DOCKERFILE) if keyword == "FROM")
    version = re.fullmatch(r"python:(\d+)\.(\d+)-slim", final.split()[0])
    assert version, final
    minimum = re.fullmatch(r">=(\d+)\.(\d+)", PYPROJECT["project"]["requires-python"])
    assert minimum
    assert (int(version[1]), int(version[2])) >= (int(minimum[1]), int(minimum[2]))


def test_the_image_runs_inv_as_a_non_root_user() -> None:
    stage = _final_stage()
    keywords = [keyword for keyword, _ in stage]
    assert "USER" in keywords and "ENTRYPOINT" in keywords
    assert keywords.index("USER") < keywords.index("ENTRYPOINT")
    users = [args for keyword, args in stage if keyword == "USER"]
    user = users[-1].split(":")[0]
    assert user not in ("root", "0"), f"USER {users[-1]} is root"
    created = [
        args
        for keyword, args in stage
        if keyword == "RUN" and re.search(rf"(useradd|adduser)\b.*\s{re.escape(user)}\b", args)
    ]
    assert created or user.isdigit(), f"no RUN creates user {user}"
    for run in created:
        uid = re.search(r"(?:--uid|-u)[ =](\d+)", run)
        assert uid and int(uid[1]) != 0, run
    assert _last("ENTRYPOINT") == ["inv"]
    assert "inv" in PYPROJECT["project"]["scripts"]


def test_pip_installs_an_extra_of_the_project_and_keeps_no_cache() -> None:
    runs = [args for keyword, args in DOCKERFILE if keyword == "RUN" and "pip install" in args]
    assert runs, "the Dockerfile installs nothing"
    assert all("--no-cache-dir" in run for run in runs), runs
    extras = _installed_extras()
    assert {"kafka", "api"} <= extras
    assert extras <= set(PYPROJECT["project"]["optional-dependencies"]), extras
    assert "dev" not in extras, "the image carries no test tools"
    # the kafka extra brings every client the compose stack talks to, api the server
    requirements = " ".join(
        r for e in extras for r in PYPROJECT["project"]["optional-dependencies"][e]
    )
    for client in ("psycopg", "sqlalchemy", "alembic", "confluent-kafka", "redis"):
        assert client in requirements, client
    for server in ("fastapi", "uvicorn", "limits", "prometheus-client"):
        assert server in requirements, server


def test_the_image_serves_the_api_by_default() -> None:
    command = _last("CMD")
    assert command[:1] == ["serve"], command
    assert _option_value(command, "--host") == "0.0.0.0", "a container must listen beyond lo"
    exposed = {
        int(port.split("/")[0])
        for keyword, args in _final_stage()
        if keyword == "EXPOSE"
        for port in args.split()
    }
    assert exposed == {int(_option_value(command, "--port") or 8000)}


def test_copy_sources_exist() -> None:
    copies = _copies()
    assert copies
    for instruction, sources in copies:
        assert sources, instruction
        for source in sources:
            assert _source_path(source).exists(), f"{instruction}: {source} does not exist"


def test_the_image_gets_what_setuptools_needs_to_build() -> None:
    copied = {
        source.removeprefix("./").rstrip("/") for _, sources in _copies() for source in sources
    }
    if "" in copied or "." in copied:
        return  # the whole context
    needed = {"pyproject.toml", PYPROJECT["project"]["readme"]}
    patterns = PYPROJECT["tool"]["setuptools"]["packages"]["find"]["include"]
    for folder in ROOT.iterdir():
        if (folder / "__init__.py").is_file() and any(
            _glob_regex(p).fullmatch(folder.name) for p in patterns
        ):
            needed.add(folder.name)
    assert {"backends", "inventory_cli"} <= needed
    assert needed <= copied, f"not copied into the image: {sorted(needed - copied)}"


def test_dockerignore_keeps_what_the_dockerfile_copies_and_drops_local_state() -> None:
    patterns = _dockerignore()
    for instruction, sources in _copies():
        for source in sources:
            path = _source_path(source)
            files = [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file()]
            for file in files:
                relative = file.relative_to(ROOT).as_posix()
                cache = "__pycache__" in file.parts or file.suffix == ".pyc"
                assert _ignored(relative, patterns) == cache, f"{instruction}: {relative}"
    for local in (".venv/bin/python", ".git/HEAD", "tests/conftest.py", "bench/README.md"):
        assert _ignored(local, patterns), f"{local} would be sent to the build"
    assert _ignored("backends/postgres/__pycache__/schema.cpython-311.pyc", patterns)
    assert _ignored("inv.egg-info/PKG-INFO", patterns)
    assert not _ignored("README.md", patterns)


def test_dockerignore_matching_follows_docker() -> None:
    # Patterns are anchored at the context root: `*.pyc` drops only top-level files.
    assert _ignored("a.pyc", ["*.pyc"]) and not _ignored("pkg/a.pyc", ["*.pyc"])
    assert _ignored("pkg/sub/a.pyc", ["**/*.pyc"])
    assert _ignored("demo/inventory.json", ["demo"])
    assert not _ignored("demo/keep.txt", ["demo/*", "!demo/keep.txt"])


# -- tests: the HTTP API and its load balancer -------------------------------------------


def test_the_api_runs_inv_serve_in_replicas() -> None:
    assert _servers() == ["api"]
    api = SERVICES["api"]
    words = _inv_words(api)
    assert _option_value(words, "--host") == "0.0.0.0", "a container must listen beyond lo"
    port = int(_option_value(words, "--port") or 0)
    assert port, "inv serve without --port"
    # Replicas of one service (docker compose honours deploy.replicas without swarm) ...
    assert int(api["deploy"]["replicas"]) >= 2
    # ... which cannot share one host port, nor one container name: the load balancer
    # publishes, the replicas only expose.
    assert not api.get("ports"), "replicas cannot all publish one host port; lb publishes"
    assert "container_name" not in api
    assert [int(p) for p in api.get("expose") or []] == [port]
    # one rate-limit budget for every replica: in Redis
    assert _environment(api)["INV_REDIS_URL"].startswith("redis://")
    needs = _depends_on(api)
    assert needs["init"] == "service_completed_successfully"
    for service in ("postgres", "postgres-replica", "redis", "kafka"):
        assert needs[service] == "service_healthy", service
    assert str(api.get("restart")) == "unless-stopped"


def _healthcheck_code(name: str) -> str:
    """The Python a healthcheck runs: `CMD python -c CODE`."""
    test = SERVICES[name]["healthcheck"]["test"]
    assert test[:3] == ["CMD", "python", "-c"], test
    assert len(test) == 4, test
    return str(test[3])


def _seconds(value: str) -> float:
    units = {"ms": 0.001, "s": 1, "m": 60, "h": 3600}
    return sum(float(n) * units[u] for n, u in re.findall(r"(\d+(?:\.\d+)?)(ms|s|m|h)", str(value)))


@pytest.fixture(scope="module")
def app_routes(tmp_path_factory: pytest.TempPathFactory) -> tuple[Any, set[str]]:
    """The API application over a JSON file, and the paths of its routes."""
    from fastapi.routing import APIRoute

    from backends.jsonfile import JsonBackend
    from inventory_cli.api.server import create_app

    path = tmp_path_factory.mktemp("deploy-api") / "inventory.json"
    backend = JsonBackend(path=path, actor="setup")
    backend.init()
    app = create_app(Settings(backend="json", file=path), backend)
    inner = app.app  # inside the perimeter
    paths = {route.path for route in inner.routes if isinstance(route, APIRoute)}
    return app, paths


def test_the_api_healthcheck_asks_readiness_of_the_app(app_routes: tuple[Any, set[str]]) -> None:
    from fastapi.testclient import TestClient

    app, paths = app_routes
    code = _healthcheck_code("api")
    urls = re.findall(r"""urlopen\(\s*['"]([^'"]+)['"]""", code)
    assert len(urls) == 1, code
    parts = urlsplit(urls[0])
    assert parts.hostname == "127.0.0.1", "the healthcheck runs inside the container"
    assert parts.port in _listens_on("api")
    assert parts.path == "/readyz", "readiness (the backend answers), not liveness"
    assert parts.path in paths, f"the app has no route {parts.path}"
    with TestClient(app) as client:
        answer = client.get(parts.path)
    assert answer.status_code == 200 and answer.json()["status"] == "ready", answer.text
    # urllib waits less than Docker does, so a hung server fails the check, not Docker's
    timeout = re.search(r"timeout\s*=\s*(\d+(?:\.\d+)?)", code)
    assert timeout, "urlopen without a timeout"
    assert float(timeout[1]) < _seconds(SERVICES["api"]["healthcheck"]["timeout"])


def test_the_api_healthcheck_code_passes_on_200_and_fails_otherwise() -> None:
    """The snippet, run as Docker would (python -c), against a real HTTP server."""
    import http.server
    import sys
    import threading

    answers = {"/readyz": 200}

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(answers.get(self.path, 404))
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        port = int(next(iter(_listens_on("api"))))
        code = _healthcheck_code("api").replace(
            f"127.0.0.1:{port}/", f"127.0.0.1:{server.server_address[1]}/"
        )

        def check() -> int:
            return subprocess.run([sys.executable, "-c", code], capture_output=True).returncode

        assert check() == 0
        answers["/readyz"] = 503  # a service behind the server is down
        assert check() != 0
    finally:
        server.shutdown()
        server.server_close()


def test_the_image_has_the_python_the_healthcheck_runs() -> None:
    # `python` on the final stage's PATH: the virtualenv the build stage made and copied
    made = re.search(r"python -m venv (\S+)", " ".join(a for k, a in DOCKERFILE if k == "RUN"))
    assert made, "no virtualenv"
    venv = made[1]
    assert any(k == "COPY" and f"--from=build {venv} {venv}" in a for k, a in _final_stage())
    path = " ".join(a for k, a in _final_stage() if k == "ENV")
    assert f"PATH={venv}/bin:" in path


def test_the_load_balancer_reaches_every_replica() -> None:
    conf = _nginx("lb")
    upstreams = dict(re.findall(r"upstream\s+(\S+)\s*\{(.*?)\}", conf, re.S))
    passed = re.findall(r"proxy_pass\s+http://([^/;\s]+)", conf)
    assert passed and set(passed) <= set(upstreams), (passed, sorted(upstreams))
    for name in passed:
        servers = re.findall(r"^\s*server\s+([^\s;]+)([^;]*);", upstreams[name], re.M)
        assert servers, f"upstream {name} has no server"
        for address, parameters in servers:
            host, _, port = address.rpartition(":")
            assert host in _servers(), f"upstream {name}: {host} is not an inv serve service"
            assert int(port) in _listens_on(host), f"{host} does not listen on {port}"
            # the service name is every replica: re-resolved as replicas come and go
            assert "resolve" in parameters.split(), address
        assert re.search(r"resolver\s+127\.0\.0\.11\b", upstreams[name] + conf), "Docker's DNS"
        assert re.search(r"\bzone\s+\S+\s+\d+k;", upstreams[name]), "resolve needs a zone"
    lb = SERVICES["lb"]
    assert _depends_on(lb) == {"api": "service_healthy"}
    assert [_host_and_ports(p)[0] for p in lb["ports"]] == ["127.0.0.1:8000"]
    # The server takes bodies up to its own limit and says 413 itself.
    from inventory_cli.api.perimeter import MAX_BODY

    size = re.search(r"client_max_body_size\s+(\d+)([km]?);", conf)
    assert size, "nginx's default body limit is 1 MiB: imports would get its 413"
    assert int(size[1]) * {"": 1, "k": 1024, "m": 1024 * 1024}[size[2]] >= MAX_BODY


def test_the_api_trusts_forwarded_addresses_from_the_load_balancer_only() -> None:
    import ipaddress

    conf = _nginx("lb")
    # The client's address as the balancer saw it, replacing whatever the client sent.
    assert re.search(r"proxy_set_header\s+X-Forwarded-For\s+\$remote_addr;", conf)
    address = SERVICES["lb"]["networks"]["default"]["ipv4_address"]
    subnets = [c["subnet"] for c in COMPOSE["networks"]["default"]["ipam"]["config"]]
    assert any(ipaddress.ip_address(address) in ipaddress.ip_network(s) for s in subnets)
    for name in _servers():
        trusted = _option_value(_inv_words(SERVICES[name]), "--forwarded-allow-ips")
        assert trusted == address, f"{name} trusts {trusted}, the load balancer is {address}"


def test_exposed_ports_are_ones_the_service_listens_on() -> None:
    exposing = [name for name, service in SERVICES.items() if service.get("expose")]
    assert {"api", "worker-1", "worker-2"} <= set(exposing)
    for name in exposing:
        exposed = {int(str(port).split("/")[0]) for port in SERVICES[name]["expose"]}
        assert exposed <= _listens_on(name), (name, exposed, _listens_on(name))


def test_worker_metrics_listen_where_prometheus_can_scrape_them() -> None:
    for name in BUILT:
        words = _inv_words(SERVICES[name])
        if words[:1] == ["worker"]:
            assert _option_value(words, "--metrics-port"), f"{name} serves no metrics"
            # 127.0.0.1 (the default) is the container's own loopback: nobody could scrape
            assert _option_value(words, "--metrics-host") == "0.0.0.0", name


# -- secrets ----------------------------------------------------------------------------


def _secret_problems(compose: dict[str, Any], where: str, explained: str) -> list[str]:
    """What is wrong with the `secrets:` of a compose file (or snippet): each one a service
    uses is declared, its file is in the project or `explained` tells the operator how to
    make it, and an `inv` container gets it in /run/secrets under the name of an `INV_*`
    setting (what `inventory_cli.settings.secrets_dir` reads)."""
    problems = []
    declared = compose.get("secrets") or {}
    fields = {name.lower() for name in Settings.model_fields}
    for name, service in (compose.get("services") or {}).items():
        for entry in service.get("secrets") or []:
            source = entry["source"] if isinstance(entry, dict) else entry
            target = entry.get("target", source) if isinstance(entry, dict) else entry
            if source not in declared:
                problems.append(f"{where}: {name} uses secret {source}, not declared")
                continue
            if str(target).startswith("/") and not str(target).startswith("/run/secrets/"):
                problems.append(f"{where}: {name} mounts {source} at {target}, not /run/secrets")
            variable = str(target).rsplit("/", 1)[-1]
            if "build" in service or where == "README":
                setting = variable.removeprefix("INV_").lower()
                if not variable.upper().startswith("INV_") or setting not in fields:
                    problems.append(f"{where}: {name}: {variable} is not an INV_* setting")
            file = str(declared[source].get("file", ""))
            in_project = file.startswith("./") and _source_path(file).exists()
            if file and not in_project and file not in explained:
                problems.append(f"{where}: secret file {file} is neither here nor explained")
    return problems


def test_secrets_are_declared_and_name_settings() -> None:
    readme = (ROOT / "README.md").read_text()
    assert _secret_problems(COMPOSE, "docker-compose.yml", readme) == []


def test_the_readme_secrets_snippet_names_settings() -> None:
    readme = (ROOT / "README.md").read_text()
    section = re.split(r"\n#{2,3} ", readme.split("### Secrets from files", 1)[1])[0]
    blocks = re.findall(r"```yaml\n(.*?)```", section, re.S)
    assert blocks, "the README shows no compose snippet for secrets"
    snippet = yaml.safe_load(blocks[0])
    assert any(service.get("secrets") for service in snippet["services"].values())
    assert set(snippet["services"]) <= set(SERVICES), "the snippet names services of ours"
    # the file it names is one the text says how to make
    prose = re.sub(r"```.*?```", "", section, flags=re.S)
    assert _secret_problems(snippet, "README", prose) == []
