"""CycloneDX 1.6 JSON: a run-time SBOM, made with cyclonedx-python-lib (docs/sbom.md).

Not an inventory of the image: the components are what this run used.

- `metadata.component`: the program (its main module's purl, the binary's SHA-256 when
  it was still readable, the trace's root, exit status and verdict as properties).
- The Go toolchain as `stdlib` (`pkg:golang/stdlib@1.27.3`) and every module of the
  build info (`pkg:golang/<path>@<version>`; replacements as properties, or the
  replacement's purl when it names a version).
- The OS: one `operating-system` component from the root's os-release.
- Every OS package that owns a file the run used (`pkg:deb/...`, `pkg:apk/...` with
  `arch`, `distro` and `upstream`), from `Analysis.inventory`, which
  `tracer.commands.sbom.attach_inventory` fills in from the root's package database
  before rendering; files no package owns as `file` components with their SHA-256.
- On each of those, the trace's answer as `cgotrace:` properties: the class (declared,
  hidden, runtime-file), `via`, the Go API, user frame and C function, the result and
  `cgotrace:reachability` (`used`: the run opened or ran one of its files; `probed`: it
  only looked for one and got ENOENT); per file an `evidence.occurrences` entry, and the
  first call site's stack as `evidence.callstack`.
- `dependencies`: program -> stdlib, modules, OS packages and files; a module (or stdlib)
  -> the packages and files its Go API used or its cgo code linked (`cgo_links`).

Without an inventory (a caller that did not resolve one) every used path is a file
component without owner or hash.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from tracer import __version__
from tracer.errors import CgotraceError
from tracer.trace.inventory import Inventory, OsPackage, UsedFile

if TYPE_CHECKING:
    from cyclonedx.model.bom import Bom
    from cyclonedx.model.component import Component
    from cyclonedx.model.component_evidence import ComponentEvidence

    from probes.records import Analysis, Caller, Dependency

NS = "cgotrace:"
PROGRAM_REF = "program"
MAX_FRAMES = 24  # of the first call site's stack, in evidence.callstack
_STD = "stdlib"


def render(analysis: Analysis, *, color: bool = False) -> str:
    """The SBOM of `analysis` as CycloneDX 1.6 JSON (ends with a newline)."""
    try:
        from cyclonedx.output.json import JsonV1Dot6
    except ImportError:  # pragma: no cover - a base dependency (pyproject.toml)
        raise CgotraceError("the cyclonedx format needs cyclonedx-python-lib",
                            help="pip install cyclonedx-python-lib") from None
    return JsonV1Dot6(build_bom(analysis)).output_as_string(indent=2) + "\n"


# === what the trace says about each path =====================================================


@dataclass
class PathUse:
    """Every dependency entry of one path (ok and failed lookups together)."""

    path: str
    results: dict[str, None] = field(default_factory=dict)
    classes: dict[str, None] = field(default_factory=dict)
    kinds: dict[str, None] = field(default_factory=dict)
    callers: list[Caller] = field(default_factory=list)
    searched: int = 0

    @property
    def used(self) -> bool:
        return "ok" in self.results


def path_uses(deps: Iterable[Dependency]) -> dict[str, PathUse]:
    out: dict[str, PathUse] = {}
    for d in deps:
        if d.cls.value == "program-file" or d.kind == "socket":
            continue
        u = out.setdefault(d.path, PathUse(d.path))
        u.results.setdefault(d.result)
        u.classes.setdefault(d.cls.value)
        u.kinds.setdefault(d.kind)
        u.callers.extend(d.callers)
        u.searched += len(d.searched)
    return out


def go_package(function: str) -> str:
    """The import path of a Go function name (`net.(*Resolver).LookupHost` -> net,
    `vendor.test/kv.Open` -> vendor.test/kv)."""
    slash = function.rfind("/")
    dot = function.find(".", slash + 1)
    return function if dot < 0 else function[:dot]


def is_std(package: str) -> bool:
    return package != "main" and "." not in package.split("/", 1)[0]


def _site(c: Caller) -> str | None:
    f = c.user_frame
    if f is None:
        return None
    where = f"{os.path.basename(f.file)}:{f.line}" if f.file else ""
    return f"{where} ({f.function})" if where and f.function else where or f.function


def _use_properties(uses: Iterable[PathUse]) -> list[tuple[str, str]]:
    """The trace's facts about a component's paths, as (name, value) pairs."""
    uses = list(uses)
    props: list[tuple[str, str]] = []
    used = any(u.used for u in uses)
    props.append(("reachability", "used" if used else "probed"))
    for u in uses:
        props += [("class", c) for c in u.classes]
        props += [("kind", k) for k in u.kinds]
        props += [("result", r) for r in u.results]
        for c in u.callers:
            props.append(("via", c.via))
            if c.go_api:
                props.append(("go-api", c.go_api))
            site = _site(c)
            if site:
                props.append(("user-frame", site))
            if c.c_function:
                props.append(("c-function", c.c_function))
            if c.origin:
                props.append(("origin", c.origin))
    return list(dict.fromkeys(props))


def _occurrence_text(u: PathUse) -> str:
    parts = ["/".join(u.classes), "/".join(u.results)]
    for c in u.callers[:3]:
        api = c.go_api or ""
        site = _site(c)
        cfn = f" -> {c.c_function}" if c.c_function else ""
        parts.append(f"via {c.via}" + (f": {api}" if api else "") +
                     (f" at {site}" if site else "") + cfn)
    if u.searched:
        parts.append(f"searched in {u.searched} places")
    return "; ".join(p for p in parts if p)


# === the document ===========================================================================


@dataclass
class _Doc:
    analysis: Analysis
    inventory: Inventory
    uses: dict[str, PathUse]
    refs: dict[str, set[str]] = field(default_factory=dict)  # dependency graph
    components: list[Component] = field(default_factory=list)
    module_refs: dict[str, str] = field(default_factory=dict)  # module path -> bom-ref
    std_ref: str | None = None
    main_module: str | None = None

    def edge(self, src: str, dst: str) -> None:
        self.refs.setdefault(src, set()).add(dst)


def build_bom(analysis: Analysis) -> Bom:
    """The cyclonedx-python-lib Bom of one analysed run."""
    from cyclonedx.model.bom import Bom, BomMetaData
    from cyclonedx.model.dependency import Dependency as CdxDependency
    from cyclonedx.model.tool import ToolRepository

    inventory = analysis.inventory or _unresolved(analysis)
    doc = _Doc(analysis, inventory, path_uses(analysis.dependencies))
    program = _program(doc)
    _go_components(doc)
    _os_component(doc)
    owned_refs = _package_components(doc)
    _file_components(doc)
    _cgo_link_edges(doc, owned_refs)
    tools = ToolRepository(components=[_tool()])
    bom = Bom(components=doc.components,
              metadata=BomMetaData(component=program, tools=tools,
                                   properties=_props([("scope", _SCOPE)])))
    by_ref = {str(c.bom_ref): c for c in [program, *doc.components]}
    deps = []
    for ref, comp in by_ref.items():
        targets = sorted(doc.refs.get(ref, ()))
        deps.append(CdxDependency(ref=comp.bom_ref,
                                  dependencies=[CdxDependency(ref=by_ref[t].bom_ref)
                                                for t in targets if t in by_ref]))
    bom.dependencies.update(deps)
    return bom


_SCOPE = ("run-time: the Go modules of the build, and the OS packages and files this run "
          "used or looked for; not an inventory of the root")


def _unresolved(analysis: Analysis) -> Inventory:
    paths = [d.path for d in analysis.dependencies if d.path.startswith("/")
             and d.kind != "socket" and d.cls.value != "program-file"]
    return Inventory(root="", label=analysis.sandbox or "unresolved",
                     files=tuple(UsedFile(path=p) for p in dict.fromkeys(paths)))


def _props(pairs: Iterable[tuple[str, str]]) -> list[Any]:
    from cyclonedx.model import Property

    return [Property(name=NS + k, value=str(v)) for k, v in pairs]


def _tool() -> Component:
    from cyclonedx.model.component import Component, ComponentType

    return Component(type=ComponentType.APPLICATION, name="cgotrace", version=__version__,
                     bom_ref="tool:cgotrace")


def _sha256(digest: str | None) -> list[Any]:
    if not digest:
        return []
    from cyclonedx.model import HashAlgorithm, HashType

    return [HashType(alg=HashAlgorithm.SHA_256, content=digest)]


def _golang_purl(path: str, version: str | None) -> Any:
    from packageurl import PackageURL

    namespace, _, name = path.rpartition("/")
    version = None if not version or version == "(devel)" else version
    return PackageURL(type="golang", namespace=namespace or None, name=name, version=version)


def _program(doc: _Doc) -> Component:
    from cyclonedx.model.component import Component, ComponentType

    a = doc.analysis
    build = a.static.get("go_build") or {}
    main = next((m for m in build.get("modules") or () if m.get("main")), None)
    doc.main_module = main["path"] if main else None
    name = build.get("path") or os.path.basename(a.binary or "program")
    ex = a.exit or {}
    props = [("binary", a.binary or ""), ("argv", " ".join(a.argv)),
             ("root", doc.inventory.label), ("go-version", a.static.get("go_version") or ""),
             ("libc", a.static.get("libc") or "none"),
             ("cgo", "true" if a.static.get("cgo") else "false"),
             ("exit-code", str(ex.get("exit_code", ""))), ("verdict", _verdict(a))]
    props += [(f"go-setting:{k}", v) for k, v in (build.get("settings") or {}).items()]
    props += [("third-party-cgo", p) for p in a.static.get("third_party_cgo") or ()]
    version = main.get("version") if main else None
    return Component(type=ComponentType.APPLICATION, name=name, bom_ref=PROGRAM_REF,
                     version=None if version in (None, "(devel)") else version,
                     purl=_golang_purl(main["path"], version) if main else None,
                     hashes=_sha256(doc.inventory.program_sha256),
                     properties=_props(p for p in props if p[1]))


def _verdict(a: Analysis) -> str:
    from probes.records import verdict

    return verdict(a).status


def _go_components(doc: _Doc) -> None:
    from cyclonedx.model.component import Component, ComponentType

    a = doc.analysis
    go_version = a.static.get("go_version")
    if go_version:
        version = str(go_version).removeprefix("go")
        comp = Component(type=ComponentType.LIBRARY, name=_STD, version=version,
                         purl=_golang_purl(_STD, version), bom_ref=f"pkg:golang/stdlib@{version}",
                         properties=_props([("go-toolchain", str(go_version))] + [
                             ("cgo-package", p) for p in a.static.get("cgo_packages") or ()]))
        doc.std_ref = str(comp.bom_ref)
        doc.components.append(comp)
        doc.edge(PROGRAM_REF, doc.std_ref)
    build = a.static.get("go_build") or {}
    for m in build.get("modules") or ():
        if m.get("main"):
            continue
        comp = _module_component(m)
        doc.module_refs[m["path"]] = str(comp.bom_ref)
        doc.components.append(comp)
        doc.edge(PROGRAM_REF, str(comp.bom_ref))


def _module_component(m: dict[str, Any]) -> Component:
    from cyclonedx.model.component import Component, ComponentType

    path, version, rep = m["path"], m.get("version"), m.get("replace")
    props: list[tuple[str, str]] = []
    if m.get("sum"):
        props.append(("go-sum", m["sum"]))
    purl = _golang_purl(path, version)
    if rep:
        replaced_by = rep["path"] + (f" {rep['version']}" if rep.get("version") and
                                     rep["version"] != "(devel)" else "")
        props.append(("go-replace", replaced_by))
        if rep.get("version") and rep["version"] != "(devel)":
            # what was linked is the replacement: scanners must look that one up
            purl = _golang_purl(rep["path"], rep["version"])
            props.append(("go-replaces", f"{path} {version}"))
            path, version = rep["path"], rep["version"]
    ref = str(purl) if purl.version else f"{purl}#{m['path']}"
    return Component(type=ComponentType.LIBRARY, name=path,
                     version=None if version in (None, "(devel)") else version, purl=purl,
                     bom_ref=ref, properties=_props(props))


def _os_component(doc: _Doc) -> None:
    from cyclonedx.model.component import Component, ComponentType

    rel = doc.inventory.os
    if not rel.get("ID"):
        return
    family = next((p.namespace for p in doc.inventory.packages), None) or rel["ID"]
    props = [(f"os-release:{k}", rel[k]) for k in ("ID", "ID_LIKE", "VERSION_ID",
                                                    "PRETTY_NAME") if rel.get(k)]
    comp = Component(type=ComponentType.OPERATING_SYSTEM, name=family,
                     version=rel.get("VERSION_ID"), bom_ref=f"os:{family}",
                     description=rel.get("PRETTY_NAME"), properties=_props(props))
    doc.components.append(comp)


def _os_purl(p: OsPackage) -> Any:
    from packageurl import PackageURL

    qualifiers = {"arch": p.arch, "distro": p.distro, "upstream": p.source}
    return PackageURL(type="deb" if p.manager == "dpkg" else "apk", namespace=p.namespace,
                      name=p.name, version=p.version,
                      qualifiers={k: v for k, v in qualifiers.items() if v})


def _package_components(doc: _Doc) -> dict[str, str]:
    """One component per OS package that owns a used path; returns path -> bom-ref."""
    from cyclonedx.model.component import Component, ComponentType
    from cyclonedx.model.license import DisjunctiveLicense

    owned: dict[str, str] = {}
    for p in doc.inventory.packages:
        files = [f for f in doc.inventory.files if p.key in f.owners]
        uses = [doc.uses[f.path] for f in files if f.path in doc.uses]
        purl = _os_purl(p)
        ref = str(purl)
        props = [("package-manager", p.manager)]
        if p.source_version:
            props.append(("source-version", p.source_version))
        props += [("file", f.path) for f in files] + _use_properties(uses)
        comp = Component(type=ComponentType.LIBRARY, name=p.name, version=p.version,
                         purl=purl, bom_ref=ref, properties=_props(props),
                         licenses=[DisjunctiveLicense(name=p.license)] if p.license else None,
                         evidence=_evidence(uses))
        doc.components.append(comp)
        doc.edge(PROGRAM_REF, ref)
        for f in files:
            owned[f.path] = ref
        _api_edges(doc, ref, uses)
    return owned


def _file_components(doc: _Doc) -> None:
    """Paths no package owns (with SHA-256 when they are files), and names looked for in
    several directories and found in none."""
    from cyclonedx.model.component import Component, ComponentType

    listed = {f.path: f for f in doc.inventory.files}
    names = [u.path for u in doc.uses.values() if not u.path.startswith("/")]
    for path in [f.path for f in doc.inventory.files if not f.owners] + names:
        f = listed.get(path)
        u = doc.uses.get(path)
        uses = [u] if u is not None else []
        props = [("file-kind", f.kind if f else "absent")]
        if f is not None and f.target:
            props.append(("symlink-target", f.target))
        if f is not None and f.size is not None:
            props.append(("size", str(f.size)))
        props += _use_properties(uses)
        ref = f"file:{path}"
        comp = Component(type=ComponentType.FILE, name=path, bom_ref=ref,
                         hashes=_sha256(f.sha256 if f else None), properties=_props(props),
                         evidence=_evidence(uses))
        doc.components.append(comp)
        doc.edge(PROGRAM_REF, ref)
        _api_edges(doc, ref, uses)


def _owner_ref(doc: _Doc, package: str) -> str | None:
    """The component a Go package belongs to: stdlib, a dependency module, or the program."""
    if is_std(package):
        return doc.std_ref
    best = None
    for path, ref in doc.module_refs.items():
        if (package == path or package.startswith(path + "/")) and \
                (best is None or len(path) > len(best[0])):
            best = (path, ref)
    return best[1] if best else PROGRAM_REF


def _api_edges(doc: _Doc, ref: str, uses: Iterable[PathUse]) -> None:
    for u in uses:
        for c in u.callers:
            if c.go_api:
                owner = _owner_ref(doc, go_package(c.go_api))
                if owner is not None:
                    doc.edge(owner, ref)


def _cgo_link_edges(doc: _Doc, owned: dict[str, str]) -> None:
    """`cgo_links`: the Go package whose cgo calls bind to a NEEDED library -> the component
    of that library's file (the loader opened it, so no Go API is on its stack)."""
    a = doc.analysis
    lib_path = {lib.get("name"): lib.get("path")
                for lib in (a.static.get("loader") or {}).get("libraries", ())}
    by_ref = {str(c.bom_ref): c for c in doc.components}
    for package, libs in (a.static.get("cgo_links") or {}).items():
        owner = _owner_ref(doc, package)
        for lib in libs:
            ref = _library_ref(doc, owned, by_ref, lib_path.get(lib), lib)
            if ref is None:
                continue
            by_ref[ref].properties.update(_props([("go-package", package)]))
            if owner is not None:
                doc.edge(owner, ref)


def _library_ref(doc: _Doc, owned: dict[str, str], by_ref: dict[str, Component],
                 path: str | None, name: str) -> str | None:
    """The component of a NEEDED library: by the path the static facts resolved, else by
    the used file of that name (the run may have opened it by another directory's name)."""
    paths = [path] if path else []
    paths += [f.path for f in doc.inventory.files
              if os.path.basename(f.path) == name and f.path != path]
    for p in paths:
        ref = owned.get(p) or f"file:{p}"
        if ref in by_ref:
            return ref
    return None


def _evidence(uses: list[PathUse]) -> ComponentEvidence | None:
    from cyclonedx.model.component_evidence import (
        CallStack,
        CallStackFrame,
        ComponentEvidence,
        Occurrence,
    )

    if not uses:
        return None
    occurrences = [Occurrence(location=u.path, additional_context=_occurrence_text(u))
                   for u in uses]
    first = min((c for u in uses for c in u.callers if c.stack),
                key=lambda c: c.first_seq, default=None)
    callstack = None
    if first is not None:
        frames = [CallStackFrame(module=f.module or "?",
                                 package=go_package(f.function) if f.function and
                                 f.file and f.file.endswith(".go") else None,
                                 function=f.function, line=f.line, full_filename=f.file)
                  for f in first.stack[:MAX_FRAMES]]
        callstack = CallStack(frames=frames)
    return ComponentEvidence(occurrences=occurrences, callstack=callstack)
