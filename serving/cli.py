"""sentiment-serve: start the sentiment API (Ray Serve) on this machine or a Ray cluster.

    sentiment-serve                                    # shipped adapter, http://127.0.0.1:8000, serving/config.yaml
    sentiment-serve --model exported --replicas 2      # an ONNX export, two model replicas
    sentiment-serve --config my.yaml --max-queued-requests 16 --no-batching
    RAY_ADDRESS=auto sentiment-serve                   # onto a running Ray cluster (ray start --head ...)

Settings come from the config file (a Ray Serve config; `serve run serving/config.yaml` reads the same one) and
the flags override them; every setting has a flag, generated from serving/settings.py's ServeSettings. Without
RAY_ADDRESS a local Ray starts with this machine's CPUs and stops with the command (Ctrl-C).
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
import typing
from pathlib import Path

from serving.settings import CONFIG_FILE, ServeConfig, ServeSettings, load_config
from training import failures
from training.errors import DataError

LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")


def build_parser() -> argparse.ArgumentParser:
    """--config, --host, --port, and one flag per ServeSettings field, each with no default: only the flags given
    override the config file."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--config", type=Path, default=CONFIG_FILE, help="Ray Serve config file (default: %(default)s)."
    )
    parser.add_argument(
        "--host",
        default=None,
        help="Address to listen on (default: the config file's http_options.host, 127.0.0.1). "
        "Set SENTIMENT_API_TOKEN in the environment before binding beyond loopback (e.g. 0.0.0.0).",
    )
    parser.add_argument("--port", type=int, default=None, help="Port (default: the config file's, 8000).")
    types = typing.get_type_hints(ServeSettings)
    for field in dataclasses.fields(ServeSettings):
        flag, kind = f"--{field.name.replace('_', '-')}", types[field.name]
        options = {"dest": field.name, "default": argparse.SUPPRESS, "help": field.metadata["help"]}
        if kind is bool:
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, **options)
        else:
            value_type = next(t for t in typing.get_args(kind) or [kind] if t is not type(None))
            parser.add_argument(flag, type=value_type, **options)
    return parser


def parse_args(argv: list[str] | None = None) -> ServeConfig:
    """The config file's settings with the flags given on top. --model is relative to the current folder."""
    given = vars(build_parser().parse_args(argv))
    config = load_config(given.pop("config"))
    host, port = given.pop("host") or config.host, given.pop("port") or config.port
    if given.get("model"):
        given["model"] = str(Path(given["model"]).resolve())
    return ServeConfig(dataclasses.replace(config.settings, **given), host=host, port=port)


def main(config: ServeConfig, block: bool = True) -> str:
    """Deploy the API; returns its URL. With `block`, serves until interrupted, then shuts Serve down."""
    from ray import serve

    from serving.api import APP_NAME, application
    from serving.cluster import connect_ray
    from serving.http import TOKEN_ENV, api_token

    settings = config.settings.checked()
    if config.host not in LOOPBACK_HOSTS and api_token() is None:
        print(
            f"warning: listening on {config.host} with no {TOKEN_ENV}: anyone who can reach this port can use the "
            f"API. Set {TOKEN_ENV} (a long random string) and restart.",
            file=sys.stderr,
        )
    connect_ray()
    serve.start(http_options={"host": config.host, "port": config.port})
    serve.run(application(settings), name=APP_NAME, route_prefix="/")
    url = f"http://{config.host}:{config.port}"
    print(f"Serving {settings.model_dir} at {url} (API docs: {url}/docs). Ctrl-C stops it.", file=sys.stderr)
    if block:
        try:
            while True:
                time.sleep(3600)
        finally:
            serve.shutdown()
    return url


def cli(argv: list[str] | None = None) -> int:
    try:
        main(parse_args(argv))
    except DataError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


def run(argv: list[str] | None = None) -> int:
    """The sentiment-serve console script: cli(), anything unexpected as one line and a log (training/failures.py)."""
    return failures.guard("serve", cli, argv)


if __name__ == "__main__":
    sys.exit(run())
