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

"""The ``nova-ipxe`` command for operators.

Exit status: 0 on success, 1 with one ``nova-ipxe: error: ...`` line on
standard error for bad input, a failed build or SIGTERM/SIGINT (after
removing any partial output), 2 for usage errors.  Never a traceback
(``--debug`` logs one).  Logging goes to standard error only, so that
standard output stays a script (``render-script``) or JSON
(``inspect --json``) whatever is logged.
"""

import argparse
import json
import os
import signal
import stat
import sys
import time
import typing

from oslo_config import cfg
from oslo_log import log as logging

from nova_ipxe import builder
from nova_ipxe import cache
from nova_ipxe import conf as ipxe_conf
from nova_ipxe import exception
from nova_ipxe import glance
from nova_ipxe import netdata

LOG = logging.getLogger(__name__)
PROG = 'nova-ipxe'


class UsageError(Exception):
    pass


class Terminated(BaseException):
    """SIGTERM, raised like KeyboardInterrupt so that cleanup runs.

    A BaseException: no ``except Exception`` on the way swallows it, and
    every ``finally`` (temp files, partial downloads) runs.
    """


def _add_script_args(p):
    p.add_argument('--network-data', required=True, metavar='FILE',
                   help='network_data.json (OpenStack metadata format); '
                        '"-" reads standard input')
    p.add_argument('--menu-url',
                   help='boot menu URL to chain (default: [ipxe] '
                        'boot_menu_url from --config-file)')
    p.add_argument('--instance-uuid', metavar='U')
    p.add_argument('--hostname', metavar='H')
    p.add_argument('--menu-network', metavar='NAME_OR_UUID',
                   help='[ipxe] menu_network')
    p.add_argument('--on-chain-failure', choices=('disk', 'shell',
                                                  'reboot'))
    p.add_argument('--chain-retries', type=int, metavar='N')
    p.add_argument('--chain-timeout', type=int, metavar='SECONDS')
    p.add_argument('--no-identity', action='store_true',
                   help='do not append uuid/hostname/mac/ip to the URL')


def _add_glance_args(p):
    p.add_argument('--glance-url', metavar='URL',
                   help='Glance endpoint ([ipxe_glance] url)')
    p.add_argument('--cache-dir', metavar='DIR',
                   help='base-ISO cache ([ipxe] cache_dir)')


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG, description='Build per-instance iPXE boot ISOs with an '
                               'injected static network script.')
    parser.add_argument('--config-file', action='append', default=[],
                        metavar='PATH', help='oslo.config file(s) with an '
                                             '[ipxe] section')
    parser.add_argument('--verbose', '-v', action='store_true',
                        help='log progress (INFO) to standard error')
    parser.add_argument('--debug', action='store_true')
    sub = parser.add_subparsers(dest='command', metavar='COMMAND')
    sub.required = True

    p = sub.add_parser('build-iso', help='build a per-instance ISO')
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument('--source', metavar='ISO', help='stock iPXE ISO')
    src.add_argument('--image', metavar='ID',
                     help='Glance image ID of the iPXE ISO (fetched into '
                          'the cache; token from OS_AUTH_TOKEN)')
    _add_glance_args(p)
    p.add_argument('--output', required=True, metavar='ISO')
    p.add_argument('--uefi', choices=('auto', 'off', 'require'))
    _add_script_args(p)

    p = sub.add_parser('render-script',
                       help='print the script build-iso would embed')
    _add_script_args(p)

    p = sub.add_parser('fetch', help='fetch and verify a Glance image into '
                                     'the base-ISO cache')
    p.add_argument('image', metavar='ID')
    _add_glance_args(p)

    p = sub.add_parser('inspect', help='show what an iPXE ISO contains')
    p.add_argument('iso', metavar='ISO')
    p.add_argument('--json', action='store_true')
    return parser


def _load_conf(args):
    conf = cfg.ConfigOpts()
    ipxe_conf.register_opts(conf)
    logging.register_options(conf)
    try:
        conf(args=[], project='nova-ipxe', default_config_files=[
            f for f in args.config_file])
    except cfg.ConfigFilesNotFoundError as e:
        raise exception.ConfigError(reason='cannot read %s'
                                    % ', '.join(e.config_files))
    except cfg.Error as e:
        raise exception.ConfigError(reason=str(e).strip())
    conf.set_override('debug', args.debug)
    # oslo.log's default handler writes to standard output.
    conf.set_override('use_stderr', True)
    logging.setup(conf, PROG)
    if not (args.debug or args.verbose):
        # Operators see warnings and the one error line, not progress.
        logging.getLogger().logger.setLevel(logging.WARNING)
    ipxe_conf.report_obsolete(conf)
    menu_url = getattr(args, 'menu_url', None)
    overrides = {
        # oslo.config would substitute ${name}: a URL typed on the command
        # line means exactly what it says.
        'boot_menu_url': menu_url.replace('$', '$$') if menu_url else None,
        'menu_network': getattr(args, 'menu_network', None),
        'on_chain_failure': getattr(args, 'on_chain_failure', None),
        'chain_retries': getattr(args, 'chain_retries', None),
        'chain_timeout': getattr(args, 'chain_timeout', None),
        'uefi': getattr(args, 'uefi', None),
        'cache_dir': getattr(args, 'cache_dir', None),
    }
    if getattr(args, 'no_identity', False):
        overrides['menu_identity'] = False
    for name, value in overrides.items():
        if value is not None:
            try:
                conf.set_override(name, value, group='ipxe')
            except ValueError as e:
                raise UsageError('--%s: %s' % (name.replace('_', '-'), e))
    glance_url = getattr(args, 'glance_url', None)
    if glance_url is not None:
        try:
            conf.set_override('url', glance_url, group='ipxe_glance')
        except ValueError as e:
            raise UsageError('--glance-url: %s' % e)
    return conf


def _read_network_data(path):
    """Bounded read of a file, a pipe or standard input.

    Devices and directories are refused (``/dev/zero`` has no end); a
    pipe is read like standard input, at most netdata.MAX_BYTES + 1.
    """
    if path == '-':
        return netdata.read_json(sys.stdin.buffer, 'standard input')
    fd: typing.Optional[int]
    try:
        # O_NONBLOCK: opening a FIFO must not wait for a writer.
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY
                     | os.O_CLOEXEC)
    except OSError as e:
        raise exception.InvalidNetworkData(
            field=path, reason='cannot read it: %s' % (e.strerror or e))
    try:
        mode = os.fstat(fd).st_mode
        if not (stat.S_ISREG(mode) or stat.S_ISFIFO(mode)):
            raise exception.InvalidNetworkData(
                field=path, reason='cannot read it: not a regular file or '
                                   'a pipe')
        os.set_blocking(fd, True)
        f = os.fdopen(fd, 'rb')
        fd = None
        with f:
            return netdata.read_json(f, path)
    finally:
        if fd is not None:
            os.close(fd)


def _check_output(path):
    """Refuse to replace anything but a regular file.

    The ISO is written to a temp file and renamed over ``path``: over a
    device (as root, ``/dev/null``), a FIFO or a directory that would
    destroy something that is not ours.  A symlink to a regular file is
    itself replaced, its target never written.
    """
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        return
    except OSError as e:
        raise UsageError('--output %s: %s' % (
            exception.one_line(path), e.strerror or e))
    if not stat.S_ISREG(mode):
        kind = ('a directory' if stat.S_ISDIR(mode) else
                'a FIFO' if stat.S_ISFIFO(mode) else
                'a device' if stat.S_ISCHR(mode) or stat.S_ISBLK(mode)
                else 'not a regular file')
        raise UsageError('--output %s is %s%s; refusing to replace it' % (
            exception.one_line(path), kind,
            ' (through a symlink)' if os.path.islink(path) else ''))


def _instance(args):
    return builder.Instance(network_data=_read_network_data(
        args.network_data), uuid=args.instance_uuid, hostname=args.hostname)


class Progress:
    """Download progress on a terminal, for downloads that take long."""

    def __init__(self, stream: typing.TextIO = sys.stderr,
                 delay: float = 1.0) -> None:
        self.stream = stream
        self.enabled = stream.isatty()
        self.start = time.monotonic()
        self.delay = delay
        self.shown = 0.0

    def __call__(self, done, total):
        now = time.monotonic()
        if not self.enabled or now - self.start < self.delay or (
                now - self.shown < 0.2 and done < total):
            return
        self.shown = now
        self.stream.write('\rdownloading: %3d%% (%.1f of %.1f MiB)%s' % (
            done * 100 // max(total, 1), done / 2 ** 20, total / 2 ** 20,
            '\n' if done >= total else ''))
        self.stream.flush()


def _glance(conf):
    if not conf.ipxe_glance.url:
        raise exception.ConfigError(reason='no Glance endpoint: pass '
                                           '--glance-url or set '
                                           '[ipxe_glance] url')
    # A token on the command line would show in ps: environment only.
    client = glance.client_from_conf(conf, token=os.environ.get(
        'OS_AUTH_TOKEN'))
    return client, cache.BaseIsoCache.from_conf(conf)


def cmd_fetch(args: argparse.Namespace, conf: cfg.ConfigOpts) -> None:
    client, base_cache = _glance(conf)
    with base_cache.get(client, args.image, conf.ipxe.max_iso_size,
                        progress=Progress()) as entry:
        print('%s: %s (%d bytes, %s verified, %s)' % (
            entry.info.id, entry.path, entry.info.size,
            entry.info.hash_algo,
            'downloaded' if entry.downloaded else 'already cached'))


def cmd_build_iso(args: argparse.Namespace,
                  conf: cfg.ConfigOpts) -> None:
    _check_output(args.output)
    if args.image:
        client, base_cache = _glance(conf)
        result, rendered, _ = builder.build_iso_from_image(
            client, base_cache, args.image, _instance(args), args.output,
            conf, progress=Progress())
    else:
        result, rendered = builder.build_iso(args.source, _instance(args),
                                             args.output, conf)
    print('%s: %d bytes, BIOS %s, UEFI %s, menu NIC %s' % (
        result.path, result.size, 'yes' if result.bios else 'no',
        'yes' if result.uefi else 'no', rendered.menu_nic.mac))


def cmd_render_script(args: argparse.Namespace,
                      conf: cfg.ConfigOpts) -> None:
    sys.stdout.write(builder.render_script(_instance(args), conf).text)


def _printable(value):
    """Names from inside an ISO are the tenant's: no escape sequences."""
    if isinstance(value, dict):
        return {k: _printable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_printable(v) for v in value]
    if isinstance(value, str):
        return exception.one_line(value, limit=4096)
    return value


def cmd_inspect(args: argparse.Namespace,
                conf: cfg.ConfigOpts) -> None:
    info = builder.load_base(args.iso, conf).describe()
    if args.json:
        # json.dumps escapes control characters and non-ASCII itself.
        print(json.dumps(info, indent=2, sort_keys=True))
        return
    info = _printable(info)
    print('ISO:       %s (%d bytes, volume %s)'
          % (info['source'], info['size'], info['volume_id']))
    print('Names:     Rock Ridge %s, Joliet %s, isohybrid %s' % tuple(
        'yes' if info[k] else 'no'
        for k in ('rock_ridge', 'joliet', 'isohybrid')))
    bios = info['bios']
    if bios:
        print('BIOS:      %s -> %s -> kernel %s (%d bytes); script: yes' % (
            bios['boot_image'], bios['config'], bios['kernel'],
            bios['kernel_size']))
    else:
        print('BIOS:      no boot entry')
    uefi = info['uefi']
    if uefi:
        print('UEFI:      %s, loader %s; script: %s' % (
            uefi['boot_image'], uefi['loader'] or 'none',
            'yes' if uefi['script_injection'] else 'no (%s)'
            % uefi['reason']))
    else:
        print('UEFI:      no boot entry')
    for name in ('bios', 'uefi'):
        if info[name] and info[name].get('ipxe'):
            _print_ipxe(name.upper(), info[name]['ipxe'])
    print('Files:     %s' % ' '.join(info['files']))


def _print_ipxe(path, caps):
    label = ('%s iPXE:' % path).ljust(11)
    if not caps['readable']:
        print('%s%s: capabilities unknown (%s)' % (label, caps['binary'],
                                                   caps['reason']))
        return
    print('%s%s (%s): features %s' % (label, caps['binary'], caps['format'],
                                      ' '.join(caps['features'])))
    https, ipv6, dns, vlan = ('yes' if caps[k] else 'no'
                              for k in ('https', 'ipv6', 'dns', 'vlan'))
    print('%sHTTPS %s, IPv6 %s, DNS %s, VLAN %s; %d commands' % (
        ' ' * 11, https, ipv6, dns, vlan, len(caps['commands'])))


# What the library cannot say, because it does not know about the CLI.
HINTS = (
    (exception.ImageNotAuthorized, ' (the token is read from OS_AUTH_TOKEN)'),
    (exception.ImageNotFound, ' (the token is read from OS_AUTH_TOKEN)'),
    (exception.InvalidNetworkData, ' (in --network-data)'),
)


def _hint(error):
    for cls, hint in HINTS:
        if isinstance(error, cls):
            return hint
    return ''


COMMANDS = {'build-iso': cmd_build_iso, 'render-script': cmd_render_script,
            'fetch': cmd_fetch, 'inspect': cmd_inspect}


def _on_signal(signum, frame):
    # A second signal must not interrupt the cleanup of the first.
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if signum == signal.SIGINT:
        raise KeyboardInterrupt()
    raise Terminated()


def _error(text):
    print('%s: error: %s' % (PROG, exception.one_line(text)),
          file=sys.stderr)


def main(argv: typing.Optional[typing.Sequence[str]] = None) -> int:
    parser = make_parser()
    args = parser.parse_args(argv)  # exits 2 on usage errors
    previous = {sig: signal.signal(sig, _on_signal)
                for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        conf = _load_conf(args)
        COMMANDS[args.command](args, conf)
    except UsageError as e:
        parser.print_usage(sys.stderr)
        _error(e)
        return 2
    except exception.NovaIpxeError as e:
        LOG.debug('Failed', exc_info=True)
        _error('%s%s' % (e, _hint(e)))
        return 1
    except KeyboardInterrupt:
        _error('interrupted')
        return 1
    except Terminated:
        _error('terminated')
        return 1
    except Exception as e:  # never a traceback for an operator
        LOG.debug('Unexpected failure', exc_info=True)
        _error('unexpected %s: %s' % (type(e).__name__, e))
        return 1
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return 0


if __name__ == '__main__':
    sys.exit(main())
