"""The ``manage.py df_*`` commands, and what they share."""

from __future__ import annotations

import argparse
import copy

from django.core.management.base import CommandParser


def global_options_after_actions(parser: CommandParser) -> None:
    """Accept Django's global options (``--settings``, ``--traceback``, ``-v``...) after an
    action too, as in ``manage.py df_workflow list --settings proj.settings``.

    Django adds them to the command's parser, so argparse would refuse them once an action's
    subparser has taken over. Each action gets a copy that leaves the option unset unless it is
    given there, so one given before the action is not overwritten.
    """
    options = [action for action in parser._actions if action.option_strings]
    for group in parser._actions:
        if not isinstance(group, argparse._SubParsersAction):
            continue
        for subparser in group.choices.values():
            taken = {flag for action in subparser._actions for flag in action.option_strings}
            for option in options:
                if taken.intersection(option.option_strings) or option.dest == "help":
                    continue
                clone = copy.copy(option)
                clone.default = argparse.SUPPRESS
                subparser._add_action(clone)
