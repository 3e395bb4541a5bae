# Copyright: HPC Gateway maintainers
# Apache-2.0 (see LICENSE)
"""sshd `from=` patterns as OpenSSH reads them (auth-options.c, match.c).

A pattern list is what goes between the quotes of an authorized_keys
`from="..."` (here a list, one pattern per item). sshd checks the client's
address against each pattern (`match_host_and_ip`, with UseDNS no the
client's "host name" is its address too):

- `!pattern` negates: an address a negated pattern matches is refused,
  whatever else matches it;
- an address or CIDR network (`10.0.0.5`, `10.1.0.0/16`, `fd00::/8`) matches
  the addresses in it. A network whose length is out of range (`/33`) or
  whose host bits are set (`10.0.0.1/8`) makes sshd refuse the whole key
  line ("inconsistent mask length"), for every address;
- anything else is a wildcard pattern (`*` any run, `?` one character, no
  other special character) matched against the address as text
  (`10.20.*`); a name (`node*.cluster.example`) matches only when sshd
  resolves names (UseDNS yes), which these filters never assume.
"""

from __future__ import annotations

import ipaddress
import re

# What a pattern may be made of: no comma (the list separator), quote or blank.
_PATTERN_CHARS = re.compile(r"[A-Za-z0-9.:*?/%_-]+")
_LOOKS_NUMERIC = re.compile(r"[0-9.]+")


def _split(pattern: str) -> tuple[bool, str]:
    return (True, pattern[1:]) if pattern.startswith("!") else (False, pattern)


def _network(body: str):
    """The network of an address or CIDR pattern, None for a wildcard pattern."""
    if "/" not in body:
        try:
            return ipaddress.ip_network(body)
        except ValueError:
            return None
    return ipaddress.ip_network(body, strict=True)  # ValueError: sshd refuses it


def pattern_error(pattern) -> str | None:
    """Why sshd would not take `pattern` in a from= list, or None."""
    if not isinstance(pattern, str) or not pattern:
        return "not a non-empty string"
    _, body = _split(pattern)
    if not body:
        return "a bare '!'"
    if not _PATTERN_CHARS.fullmatch(body):
        return "only letters, digits and . : * ? / % _ - (no commas, quotes or blanks)"
    if "/" in body:
        if "*" in body or "?" in body:
            return "a CIDR network cannot hold wildcards"
        try:
            _network(body)
        except ValueError as error:
            return f"not a CIDR network sshd accepts ({error})"
    elif _LOOKS_NUMERIC.fullmatch(body):
        try:
            ipaddress.IPv4Address(body)
        except ValueError:
            return "not an IPv4 address"
    return None


def from_pattern_errors(patterns) -> list[str]:
    """'<pattern>: <why>' for each pattern sshd would not take; an empty list,
    or one of negations only (it admits nobody), is an error too."""
    if not isinstance(patterns, (list, tuple)):
        return [f"{patterns!r}: not a list of patterns"]
    errors = [f"{pattern!r}: {error}" for pattern in patterns if (error := pattern_error(pattern))]
    if not patterns:
        errors.append("the list is empty: it admits nobody")
    elif not errors and all(pattern.startswith("!") for pattern in patterns):
        errors.append("only negated patterns: the list admits nobody")
    return errors


def _wildcard(body: str) -> re.Pattern:
    return re.compile("".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in body), re.S)


def _matches(address, text: str, body: str) -> bool:
    network = _network(body)
    if network is not None:
        return address.version == network.version and address in network
    return _wildcard(body.lower()).fullmatch(text) is not None


def from_covers(address, patterns) -> bool:
    """True when sshd would admit a client at `address` (an IPv4 or IPv6
    address) under from="<patterns joined by commas>" with UseDNS no."""
    if from_pattern_errors(patterns):
        return False  # sshd refuses a key with a bad network for every address
    parsed = ipaddress.ip_address(str(address).strip())
    text = str(parsed).lower()
    covered = False
    for pattern in patterns:
        negated, body = _split(pattern)
        if _matches(parsed, text, body):
            if negated:
                return False
            covered = True
    return covered


def from_uncovered(addresses, patterns) -> list[str]:
    """The addresses of `addresses` that from_covers refuses, in order, once each."""
    seen: list[str] = []
    for address in addresses:
        if address not in seen and not from_covers(address, patterns):
            seen.append(address)
    return seen


def from_uncovered_nodes(nodes, patterns) -> list[str]:
    """'<name> (<uncovered addresses>)' for each node ({name, addresses}) with
    an address from_covers refuses."""
    found = []
    for node in nodes:
        missed = from_uncovered(node.get("addresses") or [], patterns)
        if missed:
            found.append(f"{node.get('name')} ({' '.join(missed)})")
    return found


class FilterModule:
    """sshd from= patterns: hpcgateway.jupyterhub.from_covers, from_uncovered, from_uncovered_nodes,
    from_pattern_errors."""

    def filters(self):
        return {
            "from_covers": from_covers,
            "from_uncovered": from_uncovered,
            "from_uncovered_nodes": from_uncovered_nodes,
            "from_pattern_errors": from_pattern_errors,
        }
