#    Licensed under the Apache License, Version 2.0 (the "License"); you may
#    not use this file except in compliance with the License. You may obtain
#    a copy of the License at
#
#         http://www.apache.org/licenses/LICENSE-2.0
#
#    Unless required by applicable law or agreed to in writing, software
#    distributed under the License is distributed on an "AS IS" BASIS, WITHOUT
#    WARRANTIES OR CONDITIONS OF ANY KIND, either express or implied. See the
#    License for the specific language governing permissions and limitations
#    under the License.

"""The pipeline: network data + a stock iPXE ISO -> a per-instance ISO.

This is the one entry point the CLI and the hypervisor drivers use; it
reads the ``[ipxe]`` options and applies them in one place.
"""

import collections
import dataclasses
import hashlib
import threading

from oslo_config import cfg
from oslo_log import log as logging

from nova_ipxe import capabilities
from nova_ipxe import conf as ipxe_conf
from nova_ipxe import exception
from nova_ipxe import identity
from nova_ipxe import image
from nova_ipxe import iso
from nova_ipxe import menuurl
from nova_ipxe import netdata
from nova_ipxe import script

LOG = logging.getLogger(__name__)
CONF = ipxe_conf.CONF

# The rule lives in nova_ipxe.image; re-exported for the drivers.
is_ipxe_image = image.is_ipxe_image


@dataclasses.dataclass(frozen=True)
class Instance:
    """What the script needs to know about one instance."""

    network_data: dict
    uuid: str = None
    hostname: str = None
    network_names: dict = None       # {Neutron network UUID: name}
    image_properties: dict = None    # may carry ipxe_boot_menu_url
    server_metadata: dict = None     # may carry ipxe_boot_menu_url


@dataclasses.dataclass(frozen=True)
class Script:
    text: str
    menu_url: str
    menu_url_source: str
    menu_nic: netdata.Nic


def configured_menu_url(conf=CONF):
    """``[ipxe] boot_menu_url``, with a clear error for a "$" mistake.

    oslo.config substitutes ``$name`` and ``${name}`` in option values, so
    iPXE settings must be written ``$${net0/mac}`` in a config file.
    """
    try:
        return conf.ipxe.boot_menu_url
    except cfg.Error as e:  # substitution: no such option or group
        raise exception.ConfigError(
            reason='boot_menu_url: %s. Write iPXE settings as $${name} '
                   '(oslo.config substitutes ${name})' % e)


def _parse_network_data(instance):
    """netdata.parse(), and never an untyped error from tenant data.

    Every malformed value has a typed refusal in netdata; should one slip
    through as a plain Python error, it is still the tenant's data that
    caused it, so ``on_build_failure`` must apply: it becomes an
    InvalidNetworkData, logged with its traceback so the gap gets fixed.
    """
    try:
        return netdata.parse(instance.network_data, instance.network_names)
    except exception.NovaIpxeError:
        raise
    except (ValueError, TypeError, KeyError, IndexError, AttributeError,
            OverflowError, RecursionError, UnicodeError) as e:
        LOG.exception('Untyped error parsing network data (a nova-ipxe '
                      'bug): %s', type(e).__name__)
        raise exception.InvalidNetworkData(
            field='network_data',
            reason='unparseable (%s)' % type(e).__name__)


def render_script(instance, conf=CONF):
    """Render the instance's iPXE script from the ``[ipxe]`` options."""
    opts = conf.ipxe
    config = _parse_network_data(instance)
    menu_nic = netdata.select_menu_nic(config, opts.menu_network)
    url, source = menuurl.resolve(
        configured_menu_url(conf), instance.image_properties,
        instance.server_metadata, opts.allow_menu_url_override)
    host = identity.hostname(instance.hostname, instance.uuid)
    url = identity.chain_url(url, source, menu_nic, opts, instance.uuid,
                             host)
    policy = script.ChainPolicy(retries=opts.chain_retries,
                                timeout=opts.chain_timeout,
                                retry_delay=opts.chain_retry_delay,
                                on_failure=opts.on_chain_failure)
    text = script.render(config, url, menu_nic,
                         instance_uuid=instance.uuid,
                         hostname=host, policy=policy)
    LOG.debug('Rendered the iPXE script for %s: menu from %s via %s',
              script.check_uuid(instance.uuid) or 'instance', source,
              menu_nic.mac)
    return Script(text=text, menu_url=url, menu_url_source=source,
                  menu_nic=menu_nic)


def check_capabilities(base, rendered, uefi):
    """Refuse a boot path whose iPXE cannot fetch the menu or run it.

    Returns the ``uefi`` mode to build with.  With ``uefi = auto`` an
    unfit UEFI iPXE drops the UEFI entry (as an EFI iPXE that cannot run
    the script does) when BIOS can boot.
    """
    caps = base.capabilities()
    if base.bios:
        capabilities.check('BIOS', caps['bios'], rendered.menu_url,
                           rendered.menu_nic, rendered.text, base.source)
    if uefi != 'off' and base.efi is not None and base.efi.autoexec:
        try:
            capabilities.check('UEFI', caps['uefi'], rendered.menu_url,
                               rendered.menu_nic, rendered.text,
                               base.source)
        except exception.IpxeCapabilityMissing as e:
            if uefi == 'require' or not base.bios:
                raise
            LOG.warning('%s Dropping the UEFI boot entry: the ISO will '
                        'boot BIOS only.', e)
            return 'off'
    return uefi


def load_base(source, conf=CONF, name=None):
    """Parse a stock iPXE ISO (a path) within ``max_iso_size``."""
    return iso.BaseIso.from_path(source, max_size=conf.ipxe.max_iso_size,
                                 name=name)


class ParsedBases:
    """Parsed source ISOs kept in memory for warm builds, bounded by bytes.

    A parse holds the ISO's bytes and up to two build templates (each
    about the ISO's size), so the bound is on bytes (``[ipxe]
    parsed_iso_memory``), counted over all of them after every parse and
    every build.  Entries are content-addressed: the caller's key (image
    ID with its hash, or a file's identity) names the SHA-256 of the
    bytes, and the same bytes under several keys (one stock ISO uploaded
    as many images) are parsed and kept once.
    """

    def __init__(self, max_bytes=None):
        self.max_bytes = max_bytes  # None: [ipxe] parsed_iso_memory
        self._digests = {}          # caller's key: SHA-256 of the bytes
        self._bases = collections.OrderedDict()  # digest: BaseIso, LRU
        self._lock = threading.Lock()
        self._loading = {}  # key: the lock of the one parse under way

    def _limit(self, conf):
        if self.max_bytes is not None:
            return self.max_bytes
        return conf.ipxe.parsed_iso_memory

    @property
    def nbytes(self):
        """Bytes the kept parses hold (sources and templates)."""
        with self._lock:
            bases = list(self._bases.values())
        return sum(base.nbytes for base in bases)

    def __len__(self):
        with self._lock:
            return len(self._bases)

    def _cached(self, key):
        with self._lock:
            digest = self._digests.get(key)
            base = None if digest is None else self._bases.get(digest)
            if base is not None:
                self._bases.move_to_end(digest)
            return base

    def get(self, key, path, conf=CONF, name=None):
        """The parsed base of the file at ``path``."""
        return self._get(key, lambda: iso.read_iso_file(
            path, conf.ipxe.max_iso_size, name), name or path, conf)

    def get_data(self, key, data, source, conf=CONF):
        """The parsed base of ``data`` (bytes the caller keys by hash)."""
        return self._get(key, lambda: data, source, conf)

    def _get(self, key, read, source, conf):
        base = self._cached(key)
        if base is not None:
            return base.named(source)
        # Spawns of one new image at once wait for one parse (and one
        # template) rather than each parsing the same bytes.
        with self._lock:
            loading = self._loading.setdefault(key, threading.Lock())
        with loading:
            try:
                base = self._cached(key)
                if base is None:
                    base = self._load(key, read(), source, conf)
            finally:
                with self._lock:
                    self._loading.pop(key, None)
        self.trim(conf)
        return base.named(source)

    def _load(self, key, data, source, conf):
        digest = hashlib.sha256(data).digest()
        with self._lock:
            base = self._bases.get(digest)
        if base is None:
            base = iso.BaseIso(data, source=source,
                               max_size=conf.ipxe.max_iso_size)
        with self._lock:
            self._digests[key] = digest
            self._bases[digest] = self._bases.get(digest, base)
            self._bases.move_to_end(digest)
            return self._bases[digest]

    def trim(self, conf=CONF):
        """Drop the least recently used parses beyond the byte bound.

        Called after every parse and every build (a build may add a
        template to its base).  A parse in use by a build stays valid
        for that build; it is only no longer kept.
        """
        limit = self._limit(conf)
        with self._lock:
            sizes = [(digest, base.nbytes)
                     for digest, base in self._bases.items()]
            total = sum(size for _, size in sizes)
            for digest, size in sizes:   # oldest first
                if total <= limit:
                    break
                del self._bases[digest]
                total -= size
            kept = set(self._bases)
            for key in [k for k, d in self._digests.items()
                        if d not in kept]:
                del self._digests[key]


PARSED_BASES = ParsedBases()


def _prepare(base, instance, conf, uefi):
    """Render the script and check the ISO's iPXE can run it.

    Returns (parsed base, Script, uefi mode to build with).
    """
    if isinstance(base, str):
        base = load_base(base, conf)
    rendered = render_script(instance, conf)
    uefi = check_capabilities(base, rendered, uefi or conf.ipxe.uefi)
    return base, rendered, uefi


def _log_built(what, instance, result, size, rendered):
    LOG.info('Built %s for %s (%d bytes, BIOS %s, UEFI %s), menu from %s',
             what, script.check_uuid(instance.uuid) or 'instance', size,
             'yes' if result.bios else 'no', 'yes' if result.uefi else 'no',
             rendered.menu_url_source)


def build_iso(base, instance, output, conf=CONF, uefi=None):
    """Build the per-instance ISO at ``output`` from a parsed base.

    :param base: a :class:`nova_ipxe.iso.BaseIso` or a path to one.
    :param uefi: ``off``, ``auto`` or ``require``; default ``[ipxe] uefi``
        (a driver passes ``require`` for a guest with UEFI firmware).
    :returns: (:class:`nova_ipxe.iso.BuildResult`, :class:`Script`)
    """
    base, rendered, uefi = _prepare(base, instance, conf, uefi)
    result = base.build(rendered.text, output, uefi=uefi)
    PARSED_BASES.trim(conf)   # the build may have added a template
    _log_built(output, instance, result, result.size, rendered)
    return result, rendered


def build_iso_bytes(base, instance, conf=CONF, uefi=None):
    """:func:`build_iso` in memory (for uploads, e.g. XenAPI).

    :returns: (ISO bytes, :class:`nova_ipxe.iso.BuildResult`,
        :class:`Script`)
    """
    base, rendered, uefi = _prepare(base, instance, conf, uefi)
    data, result = base.build_bytes(rendered.text, uefi=uefi)
    PARSED_BASES.trim(conf)   # the build may have added a template
    _log_built('the ISO', instance, result, len(data), rendered)
    return data, result, rendered


def build_iso_from_image(client, cache, image_id, instance, output,
                         conf=CONF, progress=None):
    """Fetch (or reuse) the image's verified base ISO, then build.

    :param client: a :class:`nova_ipxe.glance.GlanceClient` carrying the
        caller's token.
    :param cache: a :class:`nova_ipxe.cache.BaseIsoCache`.
    :returns: (BuildResult, Script, CachedIso)
    """
    with cache.get(client, image_id, conf.ipxe.max_iso_size,
                   progress=progress) as entry:
        base = PARSED_BASES.get(entry.info.cache_key, entry.path, conf,
                                name='Glance image %s' % entry.info.id)
        props = dict(instance.image_properties or {})
        props.setdefault(menuurl.OVERRIDE_KEY, entry.info.properties.get(
            menuurl.OVERRIDE_KEY))
        instance = dataclasses.replace(instance, image_properties=props)
        result, rendered = build_iso(base, instance, output, conf)
    return result, rendered, entry


def stock_on_failure(error, conf=CONF):
    """Apply ``[ipxe] on_build_failure`` to a build error.

    Returns True when the caller should boot the unmodified ISO; re-raises
    the error otherwise.  Only typed errors qualify (every bad input is
    one, see :func:`_parse_network_data`): a programming error is never
    papered over.  The log line is one line whatever the error holds.
    """
    if not isinstance(error, BaseException):
        raise TypeError('stock_on_failure() needs an exception, got %s'
                        % type(error).__name__)
    if (isinstance(error, exception.NovaIpxeError)
            and conf.ipxe.on_build_failure == 'stock'):
        LOG.error('Could not build the per-instance iPXE ISO, booting the '
                  'unmodified ISO as [ipxe] on_build_failure = stock: '
                  '%s error: %s', error.category,
                  exception.one_line(error))
        return True
    raise error
