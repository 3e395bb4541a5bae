"""The spawn form, made from the admin's profiles and the cluster's image list.

The form only helps the user choose: `hpcgw_hub.options.validate` checks what
comes back, exactly as it checks the REST API. Every admin-provided string
(labels, descriptions, names) is HTML-escaped here; user data never reaches
the inline script, which reads the profiles from escaped data attributes.
"""

from __future__ import annotations

import json
from html import escape

from .options import RESOURCES, limits

FIELD_LABELS = {
    "minutes": "Walltime (minutes)",
    "cpus": "CPU cores",
    "memory_mb": "Memory (MB)",
    "gpus": "GPUs",
}

# Keeps the image list and the number limits in step with the chosen profile.
# Only a convenience: the hub checks every value again when the form is sent.
SCRIPT = """<script>
(function () {
  var profile = document.getElementById("hpcgw-profile");
  var image = document.getElementById("hpcgw-image");
  var about = document.getElementById("hpcgw-image-description");
  function describe() {
    var chosen = image.options[image.selectedIndex];
    about.textContent = chosen ? chosen.getAttribute("data-description") : "";
  }
  function apply() {
    var chosen = profile.options[profile.selectedIndex];
    var offered = chosen.getAttribute("data-images").split(" ");
    var limits = JSON.parse(chosen.getAttribute("data-limits"));
    var keep = false;
    for (var i = 0; i < image.options.length; i++) {
      var option = image.options[i];
      var allowed = offered.indexOf(option.value) >= 0;
      option.hidden = option.disabled = !allowed;
      if (allowed && option.selected) { keep = true; }
    }
    if (!keep) { image.value = offered[0]; }
    describe();
    Object.keys(limits).forEach(function (field) {
      var input = document.getElementById("hpcgw-" + field);
      if (!input) { return; }
      input.min = limits[field][0];
      input.max = limits[field][2];
      input.value = limits[field][1];
    });
  }
  profile.addEventListener("change", apply);
  image.addEventListener("change", describe);
})();
</script>"""


def _attrs(**attributes) -> str:
    """HTML attributes, every value escaped (True: a bare attribute, False/None: left out)."""
    out = []
    for name, value in attributes.items():
        name = name.rstrip("_").replace("_", "-")
        if value is True:
            out.append(name)
        elif value is not False and value is not None:
            out.append(f'{name}="{escape(str(value), quote=True)}"')
    return " ".join(out)


def render(profiles: list, images: list, chosen: dict) -> str:
    """The form's HTML: `chosen` (see options.remembered) is preselected."""
    catalogue = {image["name"]: image for image in images if isinstance(image, dict) and "name" in image}
    current = next(profile for profile in profiles if profile["name"] == chosen["profile"])
    offered_anywhere: list[str] = []
    for profile in profiles:
        offered_anywhere += [name for name in profile["images"] if name not in offered_anywhere]
    with_gpus = any(limits(profile, "gpus")[2] > 0 for profile in profiles)
    fields = [field for field in RESOURCES if field != "gpus" or with_gpus]

    parts = ['<div class="hpcgw-options">', '<div class="form-group mb-3">',
             '<label class="form-label" for="hpcgw-profile">Profile</label>',
             '<select class="form-select form-control" id="hpcgw-profile" name="profile">']
    for profile in profiles:
        data_limits = json.dumps({field: limits(profile, field) for field in fields}, separators=(",", ":"))
        attributes = _attrs(value=profile["name"], data_images=" ".join(profile["images"]), data_limits=data_limits,
                            selected=profile is current)
        parts.append(f"<option {attributes}>{escape(profile['label'])}</option>")
    parts += ["</select>", "</div>", '<div class="form-group mb-3">',
              '<label class="form-label" for="hpcgw-image">Image</label>',
              '<select class="form-select form-control" id="hpcgw-image" name="image">']
    for name in offered_anywhere:
        image = catalogue.get(name, {})
        allowed = name in current["images"]
        attributes = _attrs(value=name, data_description=image.get("description") or "",
                            selected=allowed and name == chosen["image"], hidden=not allowed, disabled=not allowed)
        parts.append(f"<option {attributes}>{escape(str(image.get('label') or name))}</option>")
    description = catalogue.get(chosen["image"], {}).get("description") or ""
    parts += ["</select>", f'<p class="form-text help-block" id="hpcgw-image-description">{escape(str(description))}</p>',
              "</div>"]
    for field in fields:
        least, _, most = limits(current, field)
        attributes = _attrs(class_="form-control", type="number", id=f"hpcgw-{field}", name=field, min=least,
                            max=most, step=1, value=chosen[field], required=True)
        parts += ['<div class="form-group mb-3">',
                  f'<label class="form-label" for="hpcgw-{field}">{FIELD_LABELS[field]}</label>',
                  f"<input {attributes}>", "</div>"]
    parts += ["</div>", SCRIPT]
    return "\n".join(parts) + "\n"
