"""The site's ``jupyterhub_config`` data, applied last over every fragment.

jupyterhub_config.py loads the roles' conf.d fragments first, then calls
:func:`apply` with the site's data ({"Class": {"trait": value}}), then the
raw escape hatch (conf.d/99-site.py). Setting ``c.Spawner.start_timeout``
after the fragments is not enough on its own: traitlets gives a subclass's
section priority, so the spawner role's ``c.GatewaySpawner.start_timeout``
would still win over the site's ``Spawner`` value. :func:`apply` therefore
also writes the value into every section the fragments set for a subclass
of that class (among the classes the hub is configured to run), so what the
site wrote is what the hub uses.
"""

from __future__ import annotations

from traitlets.config import Config
from traitlets.utils.importstring import import_item

# The JupyterHub traits that name the classes the hub runs.
CLASS_TRAITS = ("spawner_class", "authenticator_class", "proxy_class")


def configured_classes(c: Config) -> dict[str, type]:
    """name -> class for every class in the MRO of the configured classes."""
    classes: dict[str, type] = {}
    for trait in CLASS_TRAITS:
        value = c.JupyterHub.get(trait) if "JupyterHub" in c else None
        if isinstance(value, str) and "." in value:
            value = import_item(value)
        if isinstance(value, type):
            for klass in value.__mro__:
                classes.setdefault(klass.__name__, klass)
    return classes


def apply(c: Config, data: dict[str, dict[str, object]]) -> None:
    """Set each of the site's traits, over whatever the fragments set."""
    classes = configured_classes(c)
    for class_name, traits in data.items():
        for trait, value in traits.items():
            setattr(c[class_name], trait, value)
            for section in list(c):
                klass = classes.get(section)
                if section == class_name or klass is None or trait not in c[section]:
                    continue
                if class_name in (k.__name__ for k in klass.__mro__):
                    setattr(c[section], trait, value)
