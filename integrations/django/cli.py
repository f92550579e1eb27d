"""``manage.py df <command>``: the core CLI's commands for this project, and the relay.

``worker``, ``dev``, ``workflow`` and ``dlq`` are the very click commands of ``dfcore``
(:data:`dfcore.cli.COMMANDS`), run with a host that takes the project's App, relays the outbox,
keeps the dev server's data in ``.df/`` next to ``manage.py`` and serves the site with the
project's ``runserver``. ``relay`` is Django's (it takes ``--database``).

Each management command (``df``, and the aliases ``df_worker``, ``df_dev``, ``df_relay``,
``df_workflow``, ``df_schedule``, ``df_dlq``) is a :class:`TreeCommand` that hands its
arguments to this tree.
Django's own options (``--settings``, ``--traceback``, ``-v`` ...) are taken out first, wherever
they stand, and applied as Django applies them.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import click
from django.conf import settings
from django.core.management import call_command, get_commands, load_command_class
from django.core.management.base import BaseCommand, CommandError, CommandParser

from dfcore import App, cli

from . import runtime
from .outbox import make_relay


def django_host(echo: Callable[[str], None], errors: Callable[[str], None]) -> cli.Host:
    """The commands' host for this project, writing to ``echo`` (and warnings to ``errors``)."""

    def start_relay(stop: threading.Event) -> bool:
        if not runtime.get_settings().worker_relay:
            return False
        make_relay().start_thread(stop)
        return True

    def use_server(url: str) -> App:
        runtime.reset()  # read DFCORE again: without NATS_URL, the environment supplies it
        app = runtime.get_app()
        if app.settings.nats_url != url:
            errors(
                f'settings.DFCORE["NATS_URL"] is {app.settings.display_url!r}; using the '
                f"embedded server {url} instead"
            )
            app.configure(nats_url=url)
        return app

    return cli.Host(
        name="python manage.py df",
        get_app=runtime.get_app,
        dev_data=lambda: _project_dir() / ".df",
        start_relay=start_relay,
        use_server=use_server,
        web=_runserver,
        web_port=8000,
        echo=echo,
        extra_settings=_extra_settings,
    )


def _extra_settings(name: str) -> dict[str, Any]:
    """An extra's settings: ``DFCORE["DASHBOARD"] = {"USER": ..., "PASSWORD": ...}``."""
    found = getattr(settings, "DFCORE", {}).get(name.upper()) or {}
    if not isinstance(found, dict):
        raise CommandError(f'settings.DFCORE["{name.upper()}"] must be a dict of settings')
    return {str(k).lower(): v for k, v in found.items()}


def _runserver(host: str, port: int, announce: Callable[[str], None]) -> None:
    """The project's ``runserver`` (staticfiles' included), without its autoreloader,
    which would restart this process and NATS and the worker with it."""
    # runserver's on_bind, addr and protocol are not in Django's stubs.
    command: Any = load_command_class(get_commands()["runserver"], "runserver")
    bound = command.on_bind

    def on_bind(server_port: int) -> None:
        bound(server_port)
        shown = "127.0.0.1" if command.addr in ("0", "0.0.0.0") else command.addr
        shown = f"[{shown}]" if ":" in shown else shown
        site = f"{command.protocol}://{shown}:{server_port}/"
        announce(f"{site}  (admin: {site}admin/)")

    command.on_bind = on_bind
    address = f"[{host}]" if ":" in host else host
    call_command(command, f"{address}:{port}", use_reloader=False)


def _project_dir() -> Path:
    """The folder of ``manage.py``: settings.BASE_DIR by convention, else the current one."""
    return Path(getattr(settings, "BASE_DIR", None) or Path.cwd())


@click.group("df", context_settings=cli.CONTEXT)
def df_group() -> None:
    """Run DurableFuture workers, the dev server and the relay; inspect workflows."""


for _command in cli.COMMANDS:
    df_group.add_command(_command)


@df_group.command("relay", context_settings=cli.CONTEXT)
@click.option("--once", is_flag=True, help="Publish everything pending, then exit.")
@click.option(
    "--database",
    "databases",
    multiple=True,
    metavar="ALIAS",
    help='A database to relay from (repeatable; default: DFCORE["OUTBOX_DATABASES"] or '
    "every database the outbox is migrated to).",
)
@click.option("-l", "--loglevel", default="INFO", help="Logging level (DEBUG, INFO, WARNING...).")
def relay_command(once: bool, databases: Sequence[str], loglevel: str) -> None:
    """Publish workflow starts a crash left in the outbox.

    `manage.py df worker` runs a relay too; run this one when workers run elsewhere. On
    PostgreSQL several may run at once."""
    cli.setup_logging(loglevel)
    relay = make_relay(list(databases) or None)
    host = cli.current_host()
    if once:
        host.echo(f"published {relay.drain()} workflow start(s) from the outbox")
        return
    relay.run_until_signalled()


#: Django's options every command takes; those with a value take the next word.
_DJANGO_FLAGS = {"--traceback", "--no-color", "--force-color", "--skip-checks"}
_DJANGO_VALUED = {"--settings", "--pythonpath", "-v", "--verbosity"}


def split_django_options(argv: Sequence[str]) -> tuple[dict[str, Any], list[str]]:
    """Django's global options (anywhere in ``argv``), and the words left for the tree."""
    options: dict[str, Any] = {}
    rest: list[str] = []
    words = iter(argv)
    for word in words:
        name, equals, value = word.partition("=")
        if word in _DJANGO_FLAGS:
            options[word.lstrip("-").replace("-", "_")] = True
        elif name in _DJANGO_VALUED:
            given = value if equals else next(words, None)
            if given is None:
                raise CommandError(f"{name} needs a value")
            key = "verbosity" if name in ("-v", "--verbosity") else name.lstrip("-")
            options[key] = int(given) if key == "verbosity" else given
        elif word.startswith("-v") and word[2:].isdigit():  # -v2
            options["verbosity"] = int(word[2:])
        else:
            rest.append(word)
    return options, rest


class _Words(CommandParser):
    """Takes Django's global options out of the words, and leaves the rest to click."""

    def parse_args(  # type: ignore[override]  # one signature serves argparse's overloads
        self, args: Sequence[str] | None = None, namespace: Any = None
    ) -> Any:
        given, rest = split_django_options(list(args or []))
        parsed = super().parse_args([], namespace)
        vars(parsed).update(given, args=rest)
        return parsed


class TreeCommand(BaseCommand):
    """A management command that runs the ``df`` tree, or its command ``word``, with its
    arguments."""

    word: str | None = None

    def create_parser(self, prog_name: str, subcommand: str, **kwargs: Any) -> CommandParser:
        parser = super().create_parser(prog_name, subcommand, **kwargs)
        parser.__class__ = _Words  # Django builds the parser; only its parsing differs
        return parser

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("args", nargs="*", help="the command's arguments (see --help)")

    def run_from_argv(self, argv: list[str]) -> None:
        self._prog = f"{Path(argv[0]).name} {argv[1]}"  # in click's usage lines
        super().run_from_argv(argv)

    def print_help(self, prog_name: str, subcommand: str) -> None:
        self._run(["--help"], f"{Path(prog_name).name} {subcommand}")

    def handle(self, *args: str, **options: Any) -> None:
        self._run(args, getattr(self, "_prog", f"manage.py {self._name()}"))

    def _name(self) -> str:
        return type(self).__module__.rpartition(".")[2]

    def _run(self, argv: Sequence[str], prog: str) -> None:
        host = django_host(self.stdout.write, self.stderr.write)
        command: click.Command = df_group.commands[self.word] if self.word else df_group
        try:
            command.main(args=list(argv), prog_name=prog, obj=host, standalone_mode=False)
        except click.exceptions.Exit as exc:
            if exc.exit_code:
                raise CommandError(
                    f"exit status {exc.exit_code}", returncode=exc.exit_code
                ) from None
        except click.ClickException as exc:
            hint = (
                f" (`{prog} --help` lists the options)" if isinstance(exc, click.UsageError) else ""
            )
            raise CommandError(exc.format_message() + hint, returncode=exc.exit_code) from exc
        except click.exceptions.Abort:
            raise CommandError("aborted") from None
        except SystemExit as exc:  # worker --processes N: the supervisor's exit status
            if exc.code:
                raise CommandError(f"exit status {exc.code}", returncode=int(exc.code)) from None
