# Copyright: HPC Gateway maintainers
# Apache-2.0 (see LICENSE)
"""The gateway's rules, defined once (Python 3.9+, standard library only).

Three places run this one file:

- the controller: the filter and test plugins of this collection
  (plugins/filter/rules.py, plugins/test/rules.py) import it, so the roles'
  checks (tasks/validate.yml) are these functions;
- the hub: python/hpcgw_hub/rules.py is a symbolic link to this file, so the
  hub package (hpcgw_hub.options, the spawner) carries it wherever the
  package goes (the jupyterhub role copies python/ file by file, following
  the link; `ansible-galaxy collection build` keeps the link);
- the cluster: the gate and the job wrapper (roles/gateway/files/hpcgw-gate,
  hpcgw-job, run with `python3 -I` from the gateway's bin/) import it as
  hpcgw_rules.py, which the gateway role installs beside them
  (roles/gateway/files/hpcgw_rules.py is a symbolic link to this file).
"""

from __future__ import annotations

import json
import re

# A profile's name and its Slurm partition: a word safe in a file name and a shell.
NAME_PATTERN = r"[A-Za-z0-9][A-Za-z0-9_.-]*"
# An image's name: lower case, at most 64 characters (<root>/images/<name>.sif,
# HPCGW_IMAGE). The hub, the apptainer_images role and the job wrapper hold to it.
IMAGE_NAME_PATTERN = r"[a-z0-9][a-z0-9_.-]{0,63}"
NAME = re.compile(NAME_PATTERN)
IMAGE_NAME = re.compile(IMAGE_NAME_PATTERN)

# A profile's `groups`: hub group names (a Globus group's hub group is named by
# its UUID, see hpcgw_hub.globus), at most 255 characters.
GROUP_PATTERN = r"[A-Za-z0-9][A-Za-z0-9_.@-]{0,254}"
GROUP = re.compile(GROUP_PATTERN)
# A profile's Slurm words (sbatch --account, --qos, --reservation, and the
# type in --gres=gpu:<type>:<n>); a constraint (--constraint) may also join
# node features with & | , and [ ] and count them with *<n>. The gate passes
# each as one argv word (no shell), from the cluster's own settings.
SLURM_WORDS = ("account", "qos", "reservation", "gpu_type")
CONSTRAINT_PATTERN = r"[A-Za-z0-9_.\[][A-Za-z0-9_.&|,*\[\]-]{0,254}"
CONSTRAINT = re.compile(CONSTRAINT_PATTERN)

# The numeric fields of a profile and the least a user may ask for of each;
# max_/default_ are needed for all but gpus (left out: 0).
RESOURCES = {"minutes": 1, "cpus": 1, "memory_mb": 1, "gpus": 0}

# OpenSSH public key types, the security-key (FIDO, sk-) ones included.
SSH_KEY_TYPES = ("ssh-ed25519", "ssh-rsa", "ecdsa-sha2-nistp256", "ecdsa-sha2-nistp384", "ecdsa-sha2-nistp521",
                 "sk-ssh-ed25519@openssh.com", "sk-ecdsa-sha2-nistp256@openssh.com")
_SSH_KEY = "(?:" + "|".join(map(re.escape, SSH_KEY_TYPES)) + r") [A-Za-z0-9+/]+={0,3}"
# "type base64 [comment]": one line, no options.
SSH_PUBLIC_KEY = re.compile(_SSH_KEY + r"(?: [^\r\n]*)?")
# "host type base64 [comment]": a known_hosts line.
KNOWN_HOSTS_LINE = re.compile(r"[^\s#]\S* " + _SSH_KEY + r"(?: [^\r\n]*)?")
# The host key facts (ssh_host_key_<type>_public), in the order they are pinned.
HOST_KEY_FACTS = ("ed25519", "ecdsa", "rsa")


def _json(value) -> str:
    try:
        return json.dumps(value)
    except (TypeError, ValueError):
        return repr(value)


def _whole(value) -> bool:
    # bool is an int in Python; a YAML `true` is not a number of CPUs.
    return isinstance(value, int) and not isinstance(value, bool)


def _mappings(items, name: str, shape: str, errors: list):
    """(where, item) of each mapping of `items`; an error for each other item."""
    for index, item in enumerate(items):
        where = f"{name}[{index}]"
        if isinstance(item, dict):
            yield where, item
        else:
            errors.append(f"{where} must be a mapping {shape}.")


def _name_and_label(where: str, item: dict, pattern, what: str, twice: str, seen: set, errors: list) -> None:
    """A unique `name` matching `pattern`, a non-empty `label`."""
    value = item.get("name")
    if not isinstance(value, str) or not pattern.fullmatch(value):
        errors.append(f"{where}.name must be {what} (got {_json(value)}).")
    elif value in seen:
        errors.append(f"{where}.name {_json(value)} {twice}.")
    else:
        seen.add(value)
    if not isinstance(item.get("label"), str) or not item["label"]:
        errors.append(f"{where}.label must be a non-empty string.")


def image_errors(images, name: str = "images") -> list[str]:
    """What is wrong with an image catalogue (a non-empty list of {name,
    label, description}), each message naming the field; [] when right."""
    if not isinstance(images, list) or not images:
        return [f"{name} must be a non-empty list of {{name, label, description}}."]
    errors: list[str] = []
    seen: set = set()
    for where, image in _mappings(images, name, "{name, label, description}", errors):
        _name_and_label(where, image, IMAGE_NAME, f"an image name {IMAGE_NAME_PATTERN}", "is listed twice", seen, errors)
        if not isinstance(image.get("description", ""), str):
            errors.append(f"{where}.description must be a string.")
    return errors


# A profile's max_pending_minutes: at most a week in the queue (branch queue).
MAX_PENDING_MINUTES = 7 * 24 * 60


def profile_errors(profiles, images=None, name: str = "profiles", images_name: str = "images") -> list[str]:
    """What is wrong with the admin's profiles, each message naming the field
    (`<name>[<index>].<field>`); [] when right.

    A profile is {name, label, partition, default_/max_ minutes, cpus,
    memory_mb, gpus (optional: 0), images}, and optionally `groups` (the hub
    groups whose members may see and use it; left out: everyone) and the
    Slurm words account, qos, reservation, constraint, gpu_type. With `images` (the catalogue,
    called `images_name` in the messages), a profile may leave its images out
    (it offers the whole catalogue) and may name only images of it; without,
    it must name its images.
    """
    if not isinstance(profiles, list) or not profiles:
        return [f"{name} must be a non-empty list of profiles (the first is the default)."]
    known = None
    if isinstance(images, list):
        known = [image["name"] for image in images if isinstance(image, dict) and "name" in image]
    errors: list[str] = []
    seen: set = set()
    for where, profile in _mappings(profiles, name, "(name, label, partition, ...)", errors):
        _name_and_label(where, profile, NAME, "a word of letters, digits, '_', '.', '-'", "is used by two profiles",
                        seen, errors)
        value = profile.get("partition")
        if not isinstance(value, str) or not NAME.fullmatch(value):
            errors.append(f"{where}.partition must be a Slurm partition name (got {_json(value)}).")
        for field, least in RESOURCES.items():
            most = profile.get(f"max_{field}", None if least else 0)
            default = profile.get(f"default_{field}", None if least else 0)
            if not _whole(most) or most < least:
                errors.append(f"{where}.max_{field} must be a whole number of at least {least} (got {_json(most)}).")
            elif not _whole(default) or not least <= default <= most:
                errors.append(f"{where}.default_{field} must be a whole number from {least} to max_{field} ({most}) "
                              f"(got {_json(default)}).")
        errors += _access_errors(where, profile)
        # branch queue: how long a job of this profile may wait in Slurm's queue.
        pending = profile.get("max_pending_minutes", 1)
        if not _whole(pending) or not 1 <= pending <= MAX_PENDING_MINUTES:
            errors.append(f"{where}.max_pending_minutes must be a whole number from 1 to {MAX_PENDING_MINUTES} "
                          f"(got {_json(pending)}).")
        if "images" not in profile and known is not None:
            continue
        offered = profile.get("images")
        if not isinstance(offered, list) or not offered:
            errors.append(f"{where}.images must be a non-empty list of names from {images_name}"
                          + (" (or left out: all of them)." if known is not None else "."))
            continue
        for position, image in enumerate(offered):
            if not isinstance(image, str) or not IMAGE_NAME.fullmatch(image):
                errors.append(f"{where}.images[{position}] must be an image name {IMAGE_NAME_PATTERN} "
                              f"(got {_json(image)}).")
            elif known is not None and image not in known:
                errors.append(f"{where}.images[{position}] is {_json(image)}, not an image the cluster offers "
                              f"({images_name}: {_json(known)}).")
    return errors


def _access_errors(where: str, profile: dict) -> list[str]:
    """Who may use a profile (`groups`) and its Slurm words (account, qos,
    reservation, constraint, gpu_type), all optional."""
    errors = []
    if "groups" in profile:
        groups = profile["groups"]
        if not isinstance(groups, list) or not groups:
            errors.append(f"{where}.groups must be a non-empty list of hub group names (or left out: everyone) "
                          f"(got {_json(groups)}).")
        else:
            for position, group in enumerate(groups):
                if not isinstance(group, str) or not GROUP.fullmatch(group):
                    errors.append(f"{where}.groups[{position}] must be a hub group name {GROUP_PATTERN} "
                                  f"(got {_json(group)}).")
                elif group in groups[:position]:
                    errors.append(f"{where}.groups[{position}] {_json(group)} is listed twice.")
    for field in SLURM_WORDS:
        value = profile.get(field)
        if field in profile and (not isinstance(value, str) or not NAME.fullmatch(value) or len(value) > 255):
            errors.append(f"{where}.{field} must be a Slurm {field.replace('_', ' ')} name {NAME_PATTERN} "
                          f"(got {_json(value)}).")
    value = profile.get("constraint")
    if "constraint" in profile and (not isinstance(value, str) or not CONSTRAINT.fullmatch(value)):
        errors.append(f"{where}.constraint must be a Slurm constraint (node features joined by & | , [ ] *<n>: "
                      f"{CONSTRAINT_PATTERN}) (got {_json(value)}).")
    if "gpu_type" in profile and not (_whole(profile.get("max_gpus", 0)) and profile.get("max_gpus", 0) > 0):
        errors.append(f"{where}.gpu_type needs max_gpus of at least 1 (a GPU type for a profile without GPUs).")
    return errors


def is_ssh_public_key(line) -> bool:
    """One OpenSSH public key line: "type base64 [comment]", no options."""
    return isinstance(line, str) and SSH_PUBLIC_KEY.fullmatch(line) is not None


def is_known_hosts_line(line) -> bool:
    """One known_hosts line: "host type base64 [comment]"."""
    return isinstance(line, str) and KNOWN_HOSTS_LINE.fullmatch(line) is not None


def ssh_key_id(line) -> str:
    """"type base64" of the first public key in `line` (an authorized_keys
    line, options and all), '' when it holds none."""
    found = re.search(r"(?:^|[\s,])(" + _SSH_KEY + r")(?=\s|$)", line) if isinstance(line, str) else None
    return found.group(1) if found else ""


def ssh_host_keys(facts) -> list[str]:
    """"type base64" of each SSH host key in a host's facts (ansible_facts:
    ssh_host_key_<ed25519|ecdsa|rsa>_public and its _keytype)."""
    facts = facts if isinstance(facts, dict) else {}
    keys = []
    for kind in HOST_KEY_FACTS:
        public, keytype = facts.get(f"ssh_host_key_{kind}_public"), facts.get(f"ssh_host_key_{kind}_public_keytype")
        if public and keytype:
            keys.append(f"{keytype} {public}")
    return keys


def known_hosts_name(host: str, port=22) -> str:
    """The name ssh looks `host` up by in known_hosts: `[host]:port` off port 22."""
    return str(host) if int(port) == 22 else f"[{host}]:{int(port)}"


def known_hosts_lines(keys, host: str, port=22) -> list[str]:
    """known_hosts lines pinning `keys` ("type base64" each) for host:port."""
    return [f"{known_hosts_name(host, port)} {key}" for key in keys]


# -- a job log's tail, as a user may see it (the gate's `log`, the hub's
# message on a failed start). Bounded and with secrets redacted, here once
# for both: the gate redacts by pattern (it knows no job's values), the hub
# again by pattern and by the values it gave the job.
LOG_TAIL_LINES = 30
LOG_TAIL_BYTES = 4096
LOG_LINE_CHARS = 300
# What the gate reads of the file's end at most.
LOG_READ_BYTES = 64 * 1024
REDACTED = "[redacted]"
# Values shorter than this are never redacted by value (a user name, a port).
SECRET_VALUE_MIN = 8
_TOKEN_CHARS = r"[A-Za-z0-9._~+/=%-]"
SECRET_PATTERNS = (
    # An HTTP Authorization header, with or without its scheme word.
    re.compile(r"(?i)(\bauthorization\b[\"']?\s*[:=]\s*[\"']?)(?:(?:token|bearer|basic)\s+)?" + _TOKEN_CHARS + "+"),
    # token=..., secret: ..., password ..., api_key=... (a URL's ?token= too).
    re.compile(r"(?i)(\b(?:[a-z0-9_]*_)?(?:token|secret|password|passwd|api[_-]?key)[a-z0-9_]*\b[\"']?(?:\s*[:=]\s*[\"']?|\s+))"
               + _TOKEN_CHARS + "{8,}"),
    # What looks like a token anywhere: 32+ hex digits, or 40+ url-safe base64.
    re.compile(r"()(?<![A-Za-z0-9])[0-9A-Fa-f]{32,}(?![A-Za-z0-9])"),
    re.compile(r"()(?<![A-Za-z0-9_-])[A-Za-z0-9_-]{40,}={0,2}(?![A-Za-z0-9_-])"),
)
_LOG_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def is_secret_env(name: str, value) -> bool:
    """Whether a JUPYTERHUB_*/HPCGW_* value is one to redact by value: named
    like a secret, or shaped like a token (16+ letters, digits and _~+=-,
    both letters and digits among them; not a URL, path or name)."""
    if not isinstance(value, str) or len(value) < SECRET_VALUE_MIN:
        return False
    if re.search(r"TOKEN|SECRET|KEY|PASSWORD|COOKIE", name.upper()):
        return True
    return (re.fullmatch(r"[A-Za-z0-9_~+=-]{16,}", value) is not None
            and re.search(r"[0-9]", value) is not None and re.search(r"[A-Za-z]", value) is not None)


def redact(text: str, values=()) -> str:
    """`text` with every secret replaced by REDACTED: each of `values` (those
    of SECRET_VALUE_MIN characters or more, also URL-quoted), then whatever
    SECRET_PATTERNS find."""
    from urllib.parse import quote

    for value in sorted({v for v in values if isinstance(v, str) and len(v) >= SECRET_VALUE_MIN},
                        key=len, reverse=True):
        for form in {value, quote(value, safe="")}:
            text = text.replace(form, REDACTED)
    for pattern in SECRET_PATTERNS:
        text = pattern.sub(lambda m: m.group(1) + REDACTED, text)
    return text


def log_tail(data: bytes, lines: int = LOG_TAIL_LINES, size: int = LOG_TAIL_BYTES, values=()) -> str:
    """The last `lines` lines of a log's bytes, redacted (see redact), control
    characters escaped, each line cut at LOG_LINE_CHARS, and the whole at most
    `size` bytes of UTF-8 (whole lines from the end; a first line cut if one
    alone is longer). Empty when there is nothing."""
    text = data.decode("utf-8", "replace")
    kept = []
    for line in text.splitlines()[-max(lines, 0):] if lines > 0 else []:
        line = redact(line, values)
        line = _LOG_CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", line)
        if len(line) > LOG_LINE_CHARS:
            line = line[:LOG_LINE_CHARS] + " [...]"
        kept.append(line)
    out, total = [], 0
    for line in reversed(kept):
        cost = len(line.encode("utf-8")) + 1
        if total + cost > size:
            room = size - total - 1
            if not out and room > 0:
                out.append(line.encode("utf-8")[-room:].decode("utf-8", "ignore"))
            break
        out.append(line)
        total += cost
    return "\n".join(reversed(out))
