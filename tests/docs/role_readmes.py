#!/usr/bin/env python3
"""Write each role's README variable table from its meta/argument_specs.yml.

usage: tests/docs/role_readmes.py [COLLECTION_ROOT]   (`make docs` runs it)

For every role folder with a meta/argument_specs.yml, aar-doc (as
dev-sec's collection uses it) renders tests/docs/role-variables.md.j2 between
the README's `<!-- BEGIN_ANSIBLE_DOCS -->` and `<!-- END_ANSIBLE_DOCS -->`
lines, leaving the rest of the README as written. A README without them
gets a "Variables" section at its end; a role without a README gets one.
tests/unit/test_role_readmes.py runs this on a copy and fails when a README
differs.
"""

from __future__ import annotations

import pathlib
import re
import sys

BEGIN, END = "<!-- BEGIN_ANSIBLE_DOCS -->", "<!-- END_ANSIBLE_DOCS -->"
TEMPLATE = pathlib.Path(__file__).with_name("role-variables.md.j2")
# Text outside code spans that a Markdown viewer would take for HTML.
_CODE_SPAN = re.compile(r"`[^`]*`")


def roles(root: pathlib.Path) -> list[pathlib.Path]:
    return sorted(p for p in (root / "roles").iterdir() if (p / "meta" / "argument_specs.yml").is_file())


def _with_markers(role: pathlib.Path) -> None:
    readme = role / "README.md"
    text = readme.read_text() if readme.exists() else f"# {role.name}\n"
    if f"\n{BEGIN}\n" in f"\n{text}" and f"\n{END}\n" in text:
        return
    readme.write_text(text.rstrip("\n") + f"\n\n## Variables\n\n{BEGIN}\n{END}\n")


def _check(role: pathlib.Path) -> list[str]:
    text = (role / "README.md").read_text()
    table = text[text.index(BEGIN):text.index(END)]
    return [f"{role.name}/README.md: a bare '<' or '>' (put it in C(...) in meta/argument_specs.yml): {line[:120]}"
            for line in table.splitlines()[2:] if re.search(r"[<>]", _CODE_SPAN.sub("", line))]


def generate(root: pathlib.Path) -> list[str]:
    """Rewrite the tables of every role under root; the problems found."""
    from aar_doc.cli import app  # the test toolchain's (requirements-test.txt)

    problems = []
    for role in roles(root):
        _with_markers(role)
        try:
            app(["--output-template", str(TEMPLATE), "--output-mode", "inject", str(role), "markdown"],
                standalone_mode=False)
        except SystemExit as error:  # aar-doc's typer.Exit for a bad meta/ file
            if error.code:
                problems.append(f"{role.name}: aar-doc failed ({error.code})")
                continue
        problems += _check(role)
    return problems


if __name__ == "__main__":
    found = generate(pathlib.Path(sys.argv[1] if len(sys.argv) > 1 else pathlib.Path(__file__).parents[2]))
    if found:
        sys.exit("\n".join(found))
