"""The spawn form, made from the admin's profiles and the cluster's image list.

The form only helps the user choose: `hpcgw_hub.options.validate` checks what
comes back, exactly as it checks the REST API. The HTML is the Jinja2
template templates/form.html.j2, rendered with autoescaping: every
admin-provided string (labels, descriptions, names) is HTML-escaped by the
template engine, not by hand; user data never reaches the inline script,
which reads the profiles from escaped data attributes.
"""

from __future__ import annotations

import json

from jinja2 import Environment, PackageLoader, StrictUndefined

from .options import RESOURCES, limits

FIELD_LABELS = {
    "minutes": "Walltime (minutes)",
    "cpus": "CPU cores",
    "memory_mb": "Memory (MB)",
    "gpus": "GPUs",
}

# autoescape=True for every template, whatever its name; StrictUndefined: a
# name missing from render()'s context is an error, not an empty string.
ENVIRONMENT = Environment(
    loader=PackageLoader("hpcgw_hub", "templates"),
    autoescape=True,
    undefined=StrictUndefined,
    trim_blocks=True,
    keep_trailing_newline=True,
)
TEMPLATE = "form.html.j2"


def render(profiles: list, images: list, chosen: dict) -> str:
    """The form's HTML: `chosen` (see options.remembered) is preselected."""
    catalogue = {image["name"]: image for image in images if isinstance(image, dict) and "name" in image}
    current = next(profile for profile in profiles if profile["name"] == chosen["profile"])
    offered_anywhere: list[str] = []
    for profile in profiles:
        offered_anywhere += [name for name in profile["images"] if name not in offered_anywhere]
    with_gpus = any(limits(profile, "gpus")[2] > 0 for profile in profiles)
    fields = [field for field in RESOURCES if field != "gpus" or with_gpus]
    return ENVIRONMENT.get_template(TEMPLATE).render(
        profiles=[
            {
                "name": profile["name"],
                "label": profile["label"],
                "images": " ".join(profile["images"]),
                "limits": json.dumps({field: limits(profile, field) for field in fields}, separators=(",", ":")),
                "selected": profile is current,
            }
            for profile in profiles
        ],
        images=[
            {
                "name": name,
                "label": str(catalogue.get(name, {}).get("label") or name),
                "description": catalogue.get(name, {}).get("description") or "",
                "allowed": name in current["images"],
                "selected": name in current["images"] and name == chosen["image"],
            }
            for name in offered_anywhere
        ],
        description=str(catalogue.get(chosen["image"], {}).get("description") or ""),
        fields=[
            {
                "name": field,
                "label": FIELD_LABELS[field],
                "min": limits(current, field)[0],
                "max": limits(current, field)[2],
                "value": chosen[field],
            }
            for field in fields
        ],
    )
