"""What every command shares: the group, its one-line errors, the --dsn option."""

from __future__ import annotations

from typing import Any, Callable

import click
import psycopg

from ..errors import LabError

__all__ = ["LabGroup", "cli", "dsn_option"]


class LabGroup(click.Group):
    """A click group that turns user-facing errors into one line on stderr and exit code 1."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except LabError as e:
            raise click.ClickException(str(e)) from None
        except psycopg.Error as e:
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise click.ClickException(f"PostgreSQL error: {first}") from None


def dsn_option(f: Callable[..., Any]) -> Callable[..., Any]:
    """The shared ``--dsn`` option (else LAB_DSN, else DATABASE_URL, else the embedded server)."""
    return click.option(
        "--dsn",
        default=None,
        metavar="DSN",
        help="PostgreSQL URL. Default: $LAB_DSN, else $DATABASE_URL, else the embedded server.",
    )(f)


@click.group(cls=LabGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="labhelpers")
def cli() -> None:
    """The Multi-Tenant Schema Lab: PostgreSQL multi-tenant schema design, hands-on.

    Example: labhelpers run
    """


