"""What is installed: tasqueue's version and each plugin's package, version, URL schemes and hooks."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version
from typing import Any

import msgspec

from tasqueue.plugins import PluginHost

__all__ = ["PluginInfo", "plugins", "versions"]


class PluginInfo(msgspec.Struct, frozen=True, kw_only=True):
    """One loaded plugin: its entry-point name, the package that ships it, the schemes it serves, the hooks it implements."""

    name: str
    package: str
    version: str
    schemes: list[str]
    hooks: list[str]


def _core_version() -> str:
    try:
        return version("tasqueue-core")
    except PackageNotFoundError:
        return "(not installed)"


def plugins() -> list[PluginInfo]:
    """Every plugin a default ``Server`` loads: the built-in ``memory`` one, then the installed ones."""
    pm = PluginHost().pm
    dists = {id(plugin): dist for plugin, dist in pm.list_plugin_distinfo()}
    found: list[PluginInfo] = []
    for name, plugin in pm.list_name_plugin():
        if plugin is None:
            continue  # blocked with TASQUEUE_DISABLE_PLUGINS
        dist = dists.get(id(plugin))
        package, ver = (dist.project_name, dist.version) if dist is not None else ("tasqueue-core", _core_version())
        schemes: set[str] = set()
        for hook in ("tasqueue_register_brokers", "tasqueue_register_results"):
            impl: Any = getattr(plugin, hook, None)
            if impl is not None:
                impl(register=lambda scheme, factory, found=schemes: found.add(scheme.lower()))
        hooks = sorted(caller.name for caller in pm.get_hookcallers(plugin) or ())
        found.append(PluginInfo(name=name, package=package, version=ver, schemes=sorted(schemes), hooks=hooks))
    return found


def versions() -> list[tuple[str, str]]:
    """``("tasqueue", core version)`` then one ``(package, "version (schemes)")`` per installed plugin package."""
    lines = [("tasqueue", _core_version())]
    seen: set[str] = set()
    for p in plugins():
        if p.package == "tasqueue-core" or p.package in seen:
            continue
        seen.add(p.package)
        schemes = ", ".join(f"{s}://" for s in p.schemes)
        lines.append((f"  {p.package}", p.version + (f" ({schemes})" if schemes else "")))
    return lines
