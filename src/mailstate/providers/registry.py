"""The one registry of providers: the entry points of the group ``mailstate.providers`` (see pyproject.toml).

Built-in providers are found exactly as a third party's are. A provider is configured when its
``[providers.<name>]`` table is written (a table with defaults for every field, such as ldap's, always is)
or when its settings' switch variable (``ENV_SWITCH``: MAILSTATE_IMAP_URL, MAILSTATE_SSH_HOST) is set.
Nothing here knows a provider by name.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterable, Mapping
from importlib.metadata import entry_points
from typing import Any, get_args

from pydantic import BaseModel

from mailstate.errors import ProviderError
from mailstate.model.provider import DesiredState, Prefetches, Provider

ENTRY_POINT_GROUP = "mailstate.providers"


def provider_classes() -> dict[str, type[Provider]]:
    """Every registered provider class by name (the built-in ones come through entry points too)."""
    found: dict[str, type[Provider]] = {}
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        try:
            found[ep.name] = ep.load()
        except Exception as exc:  # a broken third-party plug-in must not hide the others
            raise ProviderError(f"provider {ep.name!r} ({ep.value}) failed to load: {exc}") from exc
    return found


def standalone_providers() -> list[str]:
    """Every registered provider but those standing in for another on the same kinds (iredmail for ldap,
    whose settings name ``REPLACES``): the providers whose routes hold when no state chooses."""
    return [name for name, cls in provider_classes().items()
            if not getattr(getattr(cls, "settings_model", None), "REPLACES", None)]


def provider_class(name: str) -> type[Provider]:
    """Load one provider class from the entry points (only the one asked for: importing a provider
    imports its client library, which a run that does not use it should not pay for)."""
    eps = [ep for ep in entry_points(group=ENTRY_POINT_GROUP) if ep.name == name]
    if not eps:
        known = sorted(ep.name for ep in entry_points(group=ENTRY_POINT_GROUP))
        raise ProviderError(f"no provider named {name!r}; registered: {', '.join(known) or 'none'}")
    try:
        cls: type[Provider] = eps[0].load()
    except Exception as exc:  # a missing or broken plug-in: one clear message
        raise ProviderError(f"provider {name!r} ({eps[0].value}) failed to load: {exc}") from exc
    return cls


def routes(names: Iterable[str]) -> dict[str, str]:
    """Which of the providers ``names`` carries out each kind (record kinds and kinds of work such as
    ``mail_archive``), from the ``kinds`` each declares. Two providers declaring one kind is an error: a
    change must have exactly one provider. A kind none of them declares has no route: its changes are
    left out of a plan made with these providers (reconciler.plan.diff)."""
    out: dict[str, str] = {}
    for name in names:
        for kind in sorted(provider_class(name).kinds):
            if out.setdefault(kind, name) != name:
                raise ProviderError(
                    f"providers {out[kind]!r} and {name!r} both declare the kind {kind!r}; a change of it "
                    "must go to exactly one provider"
                )
    return out


def unlisted_kinds(state: DesiredState, names: Iterable[str]) -> frozenset[str]:
    """The kinds the providers ``names`` are told (by their settings) to remove when live and not in the
    TOML (a provider's classmethod ``unlisted_kinds(state)``)."""
    out: set[str] = set()
    for name in names:
        of = getattr(provider_class(name), "unlisted_kinds", None)
        if of is not None:
            out |= of(state)
    return frozenset(out)


def option_for(names: Iterable[str], flag: str, **options: Any) -> dict[str, dict[str, Any]]:
    """``options`` for each of the providers ``names`` whose class sets the ClassVar ``flag``
    (``writes_passwords``: ``passwords_out``), in the form open_providers takes."""
    return {n: dict(options) for n in names if getattr(provider_class(n), flag, False)}


def make_provider(name: str, state: DesiredState, **kwargs: Any) -> Provider:
    return provider_class(name).from_state(state, **kwargs)


def _settings_class(annotation: Any) -> type[BaseModel] | None:
    for candidate in (annotation, *get_args(annotation)):
        if isinstance(candidate, type) and issubclass(candidate, BaseModel):
            return candidate
    return None


def configured_providers(state: DesiredState) -> list[str]:
    """The providers the state configures, in the order of its ``[providers]`` tables (ldap or iredmail,
    imap, ssh)."""
    section = state.providers
    names: list[str] = []
    replaced: set[str] = set()
    for name, info in type(section).model_fields.items():
        settings = _settings_class(info.annotation)
        switch = getattr(settings, "ENV_SWITCH", None)
        if getattr(section, name) is not None or (switch and os.environ.get(switch)):
            names.append(name)
            # a provider standing in for another on the same kinds (iredmail for ldap): only one owns them
            if getattr(settings, "REPLACES", None):
                replaced.add(settings.REPLACES)  # type: ignore[union-attr]
    return [n for n in names if n not in replaced]


def directory_provider(state: DesiredState) -> str:
    """The configured provider that owns the directory's kinds (people …): ``ldap`` unless another
    replaces it (``[providers.iredmail]``)."""
    for name in configured_providers(state):
        if "person" in provider_class(name).kinds:
            return name
    raise ProviderError("no configured provider manages people ([providers.ldap] or [providers.iredmail])")


def open_providers(
    state: DesiredState,
    names: Iterable[str] | None = None,
    *,
    for_plan: bool = False,
    preopened: Mapping[str, Provider] | None = None,
    **kwargs: Any,
) -> dict[str, Provider]:
    """Instantiate the providers (``from_state``); on a failure close those already opened. One in
    ``preopened`` (opened with the settings and prefetching, ``Prefetches``) is handed the state instead.

    ``kwargs[name]`` are options for that provider; ``for_plan`` adds each provider's ``plan_options``
    (what a plan's read leaves out). A provider reading through others (``peers``, e.g. IMAP through
    doveadm) is given the configured ones: those opened here are shared, others opened for it alone."""
    order = list(names or configured_providers(state))
    wanted = list(order)
    configured = set(configured_providers(state))
    classes = {name: provider_class(name) for name in wanted}
    # a peer first, so that the one instance (one SSH session) serves both
    wanted.sort(key=lambda n: 1 if getattr(classes[n], "peers", ()) else 0)
    opened: dict[str, Provider] = {}
    try:
        for name in wanted:
            cls = classes[name]
            extra: dict[str, Any] = dict(getattr(cls, "plan_options", {})) if for_plan else {}
            extra.update(kwargs.get(name) or {})
            early = (preopened or {}).get(name)
            if isinstance(early, Prefetches):
                early.take_state(state)
                opened[name] = early
                continue
            if getattr(cls, "peers", ()) and "peers" not in extra:
                extra["peers"], extra["own_peers"] = open_peers(cls, state, opened, configured)
            opened[name] = cls.from_state(state, **extra)
    except BaseException:
        close_providers(opened)
        raise
    return {name: opened[name] for name in order}


def open_peers(
    cls: type,
    state: DesiredState,
    opened: Mapping[str, Provider] | None = None,
    configured: Iterable[str] | None = None,
) -> tuple[dict[str, Provider], dict[str, Provider]]:
    """The configured providers ``cls`` reads through (its ``peers``): those already ``opened`` (shared,
    closed by their opener), and the others opened here for it alone (it closes them)."""
    names = set(configured if configured is not None else configured_providers(state))
    peers = [p for p in getattr(cls, "peers", ()) if p in names]
    opened = opened or {}
    shared = {p: opened[p] for p in peers if p in opened}
    owned = {p: provider_class(p).from_state(state) for p in peers if p not in opened}
    return shared, owned


def close_providers(providers: Mapping[str, Provider]) -> None:
    for prov in providers.values():
        with contextlib.suppress(Exception):
            prov.close()
