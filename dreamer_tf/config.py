"""YAML configs: `defaults`, named overlays and `--set key=value` overrides, resolved into a frozen Config.

`dreamer_tf/configs/base.yaml` (package data) holds the schema: every key with its DreamerV3 value. A
version file `<version>.yaml` holds a `defaults` mapping (its differences from the base), an optional
`inherit: {version, overlays}` (another version's defaults and the named overlays, which the file's own
overlay of the same name extends) and its overlays. `load()` applies the defaults, then the overlays in
the order given, then the overrides. Overlays and overrides may only set keys of the schema, to values of
the same type. An overlay key with regex characters (e.g. `.*\\.units`) is fully matched against every
dotted key and sets all the keys it matches; within one mapping, keys are applied in written order.
"""

import collections.abc
import difflib
import functools
import pathlib
import re

import yaml

from dreamer_tf.config_ranges import (CHOICES, RANGES, is_switch, value_choices, value_range,  # noqa: F401
                                     violation)

# Shipped inside the package so that a non-editable `pip install .` finds them too.
CONFIGS_DIR = pathlib.Path(__file__).resolve().parent / 'configs'
BASE = 'base'  # configs/base.yaml: the schema every version file overlays; not a version
_RESERVED = ('defaults', 'inherit')  # top-level names of a version file that are not overlays
# Files whose `defaults` are a whole schema of their own, not an overlay of base.yaml: Dreamer 4 shares no
# key with V1-V3 and is no agent of their trainer, so available_versions() leaves it out.
STANDALONE = ('dreamer4',)

# Characters that never occur in a plain dotted key, so their presence marks a key as a regex.
_REGEX_CHARS = re.compile(r'[*+?\[\](){}|^$\\]')

# YAML 1.1 only reads `1.0e+5` as a float; `4e-5`, `1e6` and `1.0e5` would come back as strings.
_SCI_FLOAT = re.compile(r'^[-+]?(?:[0-9][0-9_]*(?:\.[0-9_]*)?|\.[0-9_]+)[eE][-+]?[0-9]+$')


class ConfigError(ValueError):
    """An unknown key, overlay or version, a value of the wrong type, or a malformed config file."""


class _Loader(yaml.SafeLoader):
    pass


class _Dumper(yaml.SafeDumper):
    pass


def _represent_list(dumper, data):
    # Short lists of scalars read best inline, as in the config files: `size: [64, 64]`.
    flow = not any(isinstance(item, (dict, list, tuple)) for item in data)
    return dumper.represent_sequence('tag:yaml.org,2002:seq', data, flow_style=flow)


_Dumper.add_representer(list, _represent_list)

# The dumper needs the same resolver so that a string such as '4e-5' is quoted and reads back as a string.
for _cls in (_Loader, _Dumper):
    _cls.add_implicit_resolver('tag:yaml.org,2002:float', _SCI_FLOAT, list('-+0123456789.'))


def _parse_yaml(text):
    return yaml.load(text, Loader=_Loader)


class Config(collections.abc.Mapping):
    """Immutable nested mapping with attribute access; sections are Configs, lists are tuples."""

    def __init__(self, values, version='', overlays=()):
        data = {}
        for key, value in values.items():
            if isinstance(value, collections.abc.Mapping):
                value = Config(value, version, overlays)
            elif isinstance(value, (list, tuple)):
                value = tuple(value)
            data[key] = value
        object.__setattr__(self, '_data', data)
        object.__setattr__(self, '_version', str(version))
        object.__setattr__(self, '_overlays', tuple(overlays))

    @property
    def version(self):
        return self._version

    @property
    def overlays(self):
        return self._overlays

    def __getitem__(self, key):
        return self._data[key]

    def __iter__(self):
        return iter(self._data)

    def __len__(self):
        return len(self._data)

    def __getattr__(self, name):
        # Private names must fail fast, or copy/pickle probing before _data exists would recurse.
        if name.startswith('_'):
            raise AttributeError(name)
        try:
            return self._data[name]
        except KeyError:
            keys = ', '.join(self._data)
            raise AttributeError(f"Config has no key '{name}'; keys: {keys}") from None

    def __setattr__(self, name, value):
        raise AttributeError(f"Config is immutable; use config.update({{'{name}': ...}}) for a changed copy")

    def __delattr__(self, name):
        raise AttributeError('Config is immutable')

    def __eq__(self, other):
        if isinstance(other, Config):
            return (self.to_dict(), self.version, self.overlays) == (
                other.to_dict(), other.version, other.overlays)
        if isinstance(other, collections.abc.Mapping):
            return self.to_dict() == _plain(other)
        return NotImplemented

    __hash__ = None

    def __reduce__(self):
        return (Config, (self.to_dict(), self.version, self.overlays))

    def __repr__(self):
        return f'Config(version={self.version!r}, overlays={self.overlays!r}, {self.to_dict()!r})'

    def get(self, key, default=None):
        """Dotted lookup: config.get('rssm.deter')."""
        node = self
        for part in key.split('.'):
            if not isinstance(node, Config) or part not in node._data:
                return default
            node = node._data[part]
        return node

    def to_dict(self):
        return _plain(self)

    def flat(self):
        """Every leaf under its dotted key, e.g. {'rssm.deter': 8192, ...}."""
        return _flatten(self)

    def update(self, overrides):
        """A copy with the dotted (or regex) keys of `overrides` set, checked like an overlay."""
        schema = _Schema(self.to_dict())
        schema.apply(overrides, 'update()')
        return Config(schema.nested(), self.version, self.overlays)

    def save(self, path):
        path = pathlib.Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        doc = {'version': self.version, 'overlays': list(self.overlays), 'config': self.to_dict()}
        # Written beside and renamed over, so a run killed mid-save leaves the old file, never half a file.
        temp = path.with_name(f'.{path.name}.tmp')
        temp.write_text(yaml.dump(doc, Dumper=_Dumper, sort_keys=False, default_flow_style=False))
        temp.replace(path)

    @classmethod
    def from_file(cls, path):
        """A saved config; keys an older library did not write take their version's defaults."""
        doc = _parse_yaml(pathlib.Path(path).read_text())
        if not isinstance(doc, dict) or not isinstance(doc.get('config'), dict):
            raise ConfigError(
                f'{path}: expected a saved config with keys version, overlays and config')
        version, overlays = doc.get('version') or '', doc.get('overlays') or ()
        values = _with_missing(doc['config'], _saved_defaults(version, overlays))
        return cls(values, version, overlays)


def _saved_defaults(version, overlays):
    """The current resolved config a saved one started from ({} for a version no file has)."""
    version = version or 'dreamerv3'  # configs saved before versions existed are V3's
    if version not in (*available_versions(), *STANDALONE):
        return {}
    try:
        return load(version, overlays).to_dict()
    except ConfigError:  # an overlay renamed or removed since
        return load(version).to_dict()


def _with_missing(saved, defaults):
    """`saved` plus every key of `defaults` that it lacks, section by section."""
    merged = dict(saved)
    for key, value in defaults.items():
        if key not in merged:
            merged[key] = value
        elif isinstance(value, dict) and isinstance(merged[key], dict):
            merged[key] = _with_missing(merged[key], value)
    return merged


def _plain(value):
    if isinstance(value, collections.abc.Mapping):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(item) for item in value]
    return value


def _flatten(mapping, prefix=''):
    flat = {}
    for key, value in mapping.items():
        if isinstance(value, collections.abc.Mapping):
            flat.update(_flatten(value, f'{prefix}{key}.'))
        else:
            flat[prefix + key] = value
    return flat


def _is_regex(key):
    return bool(_REGEX_CHARS.search(key))


def _join(prefix, key):
    """Dotted key of `key` under `prefix`; a regex on either side makes the result a regex."""
    if not prefix:
        return key
    if not _is_regex(prefix) and not _is_regex(key):
        return f'{prefix}.{key}'
    return _as_pattern(prefix) + r'\.' + _as_pattern(key)


def _as_pattern(key):
    return key if _is_regex(key) else re.escape(key)


def _updates(mapping, prefix=''):
    """(dotted key, value) pairs in written order; nested mappings merge key by key."""
    pairs = []
    for key, value in mapping.items():
        key = _join(prefix, str(key))
        if isinstance(value, collections.abc.Mapping):
            pairs.extend(_updates(value, key))
        else:
            pairs.append((key, value))
    return pairs


def _coerce(key, value, default):
    """`value` converted to the type of `default`, or ConfigError naming key, value and type."""
    if default is None:
        return value  # A null default declares no type.
    if is_switch(key):
        return _switch(key, value)
    if isinstance(default, (list, tuple)):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"Config key '{key}': got {value!r} ({type(value).__name__}), expected a list")
        if not default:
            return tuple(value)
        return tuple(_coerce(f'{key}[{i}]', item, default[0]) for i, item in enumerate(value))
    kind = type(default)
    ok = isinstance(value, kind) and (kind is bool or not isinstance(value, bool))
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if kind is int and isinstance(value, float) and value.is_integer():
        return int(value)  # Lets `--set run.steps=1e6` set an int key.
    if not ok:
        raise ConfigError(
            f"Config key '{key}': got {value!r} ({type(value).__name__}), expected {kind.__name__}")
    return value


def _switch(key, value):
    """A switch's value (`jit`): a bool, or a string such as `auto` (check_ranges checks the choices);
    the strings 'true' and 'false' become bools, so a quoted `'false'` never reads as on."""
    if isinstance(value, str) and value.lower() in ('true', 'false'):
        return value.lower() == 'true'
    if isinstance(value, (bool, str)):
        return value
    raise ConfigError(f"Config key '{key}': got {value!r} ({type(value).__name__}), "
                      f"expected one of {', '.join(value_choices(key))}")


class _Schema:
    """The flat dotted keys of a config being resolved; every change is checked against the current value."""

    def __init__(self, defaults):
        self.flat = _flatten(defaults)
        self.sections = set()
        for key in self.flat:
            parts = key.split('.')
            self.sections.update('.'.join(parts[:i]) for i in range(1, len(parts)))
        self._defaults = defaults

    def apply(self, updates, source):
        for key, value in _updates(updates):
            for target in self._targets(key, value, source):
                try:
                    self.flat[target] = _coerce(target, _plain(value), self.flat[target])
                except ConfigError as error:
                    raise ConfigError(f'{error} (in {source})') from None

    def _targets(self, key, value, source):
        if key in self.flat:
            return [key]
        if key in self.sections:
            raise ConfigError(f"Config key '{key}' (in {source}) is a section; got {value!r}, "
                              'expected a mapping')
        if _is_regex(key):
            try:
                matches = [name for name in self.flat if re.fullmatch(key, name)]
            except re.error as error:
                raise ConfigError(f"Config key '{key}' (in {source}) is not a valid regex: {error}") from None
            if not matches:
                raise ConfigError(f"Config regex '{key}' (in {source}) matches no key")
            return matches
        raise ConfigError(self._unknown(key, source))

    def _unknown(self, key, source):
        message = f"Unknown config key '{key}' (in {source})."
        close = difflib.get_close_matches(
            key, list(self.flat) + sorted(self.sections), n=3, cutoff=0.6)
        if close:
            message += f" Did you mean: {', '.join(close)}?"
        parent = key.rpartition('.')[0]
        if parent in self.sections:
            siblings = [name[len(parent) + 1:] for name in self.flat
                        if name.startswith(parent + '.')]
            message += f" Valid keys in '{parent}': {', '.join(siblings)}."
        return message

    def nested(self):
        return _fill(self._defaults, self.flat)


def _fill(template, flat, prefix=''):
    """The nested layout of `template` (empty sections included) with leaves taken from `flat`."""
    return {
        key: _fill(value, flat, f'{prefix}{key}.') if isinstance(value, collections.abc.Mapping)
        else flat[prefix + key]
        for key, value in template.items()}


def _config_path(version, configs_dir):
    path = pathlib.Path(configs_dir or CONFIGS_DIR) / f'{version}.yaml'
    if not path.is_file():
        versions = ', '.join(available_versions(configs_dir)) or 'none'
        raise ConfigError(f"Unknown config version '{version}' (no {path}); available: {versions}")
    return path


@functools.lru_cache(maxsize=32)
def _parse_file(path, mtime_ns):
    return _parse_yaml(pathlib.Path(path).read_text())  # read-only: callers never change it


def _read_file(version, configs_dir):
    path = _config_path(version, configs_dir)
    doc = _parse_file(str(path), path.stat().st_mtime_ns) or {}
    if not isinstance(doc, dict):
        raise ConfigError(f'{path}: expected a mapping of `defaults` and overlays')
    for name, overlay in doc.items():
        if not isinstance(overlay, dict):
            raise ConfigError(f"{path}: overlay '{name}' must be a mapping, got {overlay!r}")
    return doc


def _base_defaults(configs_dir):
    """[base.yaml's defaults], or [] for a configs dir without one (each file then has its own)."""
    if not (pathlib.Path(configs_dir or CONFIGS_DIR) / f'{BASE}.yaml').is_file():
        return []
    return [_read_file(BASE, configs_dir).get('defaults', {})]


def _layers(version, configs_dir, seen=()):
    """(defaults mappings in order, {overlay name: its mappings in order}) that `version` resolves."""
    if version in seen:
        raise ConfigError(f"Config version '{version}' inherits from itself")
    doc = _read_file(version, configs_dir)
    parent = doc.get('inherit')
    defaults, overlays = ([] if version in STANDALONE else _base_defaults(configs_dir)), {}
    if parent:
        defaults, inherited = _layers(parent.get('version'), configs_dir, (*seen, version))
        for name in parent.get('overlays', ()):
            if name not in inherited:
                raise ConfigError(f"{version} inherits overlay '{name}', which {parent['version']} lacks")
            overlays[name] = inherited[name]
    if 'defaults' in doc:
        defaults = [*defaults, doc['defaults']]
    if not defaults:
        raise ConfigError(f'{_config_path(version, configs_dir)}: expected a top-level `defaults` mapping')
    for name, overlay in doc.items():
        if name not in _RESERVED:
            overlays[name] = [*overlays.get(name, ()), overlay]  # extends an inherited one
    return defaults, overlays


def available_versions(configs_dir=None):
    paths = pathlib.Path(configs_dir or CONFIGS_DIR).glob('*.yaml')
    return sorted(path.stem for path in paths if path.stem not in (BASE, *STANDALONE))


def available_overlays(version='dreamerv3', configs_dir=None):
    """Overlay names: the inherited ones, then the file's own in the order it lists them."""
    return list(_layers(version, configs_dir)[1])


def _split_names(overlays):
    if isinstance(overlays, str):
        overlays = [overlays]
    overlays = overlays or ()
    return tuple(name.strip() for item in overlays for name in item.split(',') if name.strip())


def parse_override(text):
    """'rssm.deter=1024' -> ('rssm.deter', 1024); the value is read as YAML."""
    key, sep, value = text.partition('=')
    if not sep or not key.strip():
        raise ConfigError(f"Override '{text}' must have the form key=value, e.g. rssm.deter=1024")
    try:
        return key.strip(), _parse_yaml(value)
    except yaml.YAMLError as error:
        problem = getattr(error, 'problem', None) or 'not valid YAML'
        raise ConfigError(f"Override '{text}': the value of '{key.strip()}' is not valid YAML ({problem}); "
                          "quote strings that contain [ ] { } : or #, e.g. key='a:b'") from None


def check_ranges(flat):
    """ConfigError naming the first key whose value lies outside its declared range or choices."""
    for key, value in flat.items():
        allowed = violation(key, value)
        if allowed:
            raise ConfigError(f"Config key '{key}': got {value!r}, allowed: {allowed}")


def load(version='dreamerv3', overlays=(), overrides=(), configs_dir=None):
    """Resolve defaults, then `overlays` in order, then `overrides` ('key=value' strings or a dict)."""
    defaults, layers = _layers(version, configs_dir)
    names = _split_names(overlays)
    schema = _Schema(defaults[0])
    for mapping in defaults[1:]:
        schema.apply(mapping, f'defaults of {version}')
    for name in names:
        if name not in layers:
            raise ConfigError(f"Unknown overlay '{name}' for {version}; available: {', '.join(layers)}")
        for mapping in layers[name]:
            schema.apply(mapping, f"overlay '{name}'")
    if isinstance(overrides, collections.abc.Mapping):
        schema.apply(overrides, 'overrides')
    else:
        for text in overrides:
            key, value = parse_override(text)
            schema.apply({key: value}, f"--set {text}")
    config = Config(schema.nested(), version, names)
    check_ranges(config.flat())
    return config
