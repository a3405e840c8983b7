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

"""Stand-ins for devstack's ini functions and the ``openstack`` client.

``fakes.sh`` calls this file; the state lives in JSON and INI files the
test reads back.  Usage::

    fake_cloud.py ini-set FILE SECTION OPTION VALUE
    fake_cloud.py ini-get FILE SECTION OPTION
    fake_cloud.py ini-del FILE SECTION OPTION
    fake_cloud.py openstack [--os-cloud C] [--os-region R] ARGS...

The ``openstack`` stand-in knows exactly the commands the plugin uses and
fails like the real client (exit 1, a message on stderr) on an unknown
command, a missing object or a missing ``--file``, so a plugin change that
calls something else fails the tests.  ``NIPXE_FAKE_CLOUD`` names the
state file.
"""

import configparser
import hashlib
import json
import os
import sys
import uuid


def _ini(path):
    # DEFAULT is an ordinary section in nova.conf, not configparser's.
    parser = configparser.ConfigParser(default_section='\x00none',
                                       interpolation=None, strict=False)
    parser.optionxform = str
    if os.path.exists(path):
        parser.read(path)
    return parser


def ini_set(path, section, option, value):
    parser = _ini(path)
    if not parser.has_section(section):
        parser.add_section(section)
    parser.set(section, option, value)
    with open(path, 'w') as f:
        parser.write(f)


def ini_get(path, section, option):
    parser = _ini(path)
    if parser.has_option(section, option):
        print(parser.get(section, option))


def ini_del(path, section, option):
    parser = _ini(path)
    if parser.has_option(section, option):
        parser.remove_option(section, option)
        with open(path, 'w') as f:
            parser.write(f)


class Fail(Exception):
    pass


def _options(args, flags=()):
    """Split ``args`` into positionals and {--option: [values]}."""
    positional, options = [], {}
    i = 0
    while i < len(args):
        arg = args[i]
        if arg.startswith('--'):
            if arg in flags:
                options.setdefault(arg, []).append(True)
                i += 1
                continue
            if i + 1 >= len(args):
                raise Fail('argument %s: expected one argument' % arg)
            options.setdefault(arg, []).append(args[i + 1])
            i += 2
        elif arg in ('-f', '-c'):
            options.setdefault(arg, []).append(args[i + 1])
            i += 2
        else:
            positional.append(arg)
            i += 1
    return positional, options


def _one(options, name, default=None):
    values = options.get(name)
    return values[-1] if values else default


def _print_ids(objects, options):
    if (options.get('-f') != ['value']
            or options.get('-c') not in (['ID'], ['id'])):
        raise Fail('the stand-in prints only "-f value -c ID"')
    for obj in objects:
        print(obj['id'])


def _find(collection, name_or_id, what):
    for obj in collection:
        if name_or_id in (obj['id'], obj['name']):
            return obj
    raise Fail('No %s found for %s' % (what, name_or_id))


def openstack(state, args):
    rest, top = list(args), {}
    while rest[:1] in (['--os-cloud'], ['--os-region']):
        top[rest[0]] = rest[1]
        rest = rest[2:]
    cloud = top.get('--os-cloud')
    if cloud not in ('devstack', 'devstack-admin'):
        raise Fail('unknown cloud %r' % cloud)
    if len(rest) < 2:
        raise Fail('missing command')
    noun, verb = rest[0], rest[1]
    if noun == 'router' and verb in ('add', 'remove'):
        verb = '%s %s' % (verb, rest[2])
        rest = rest[1:]
    positional, options = _options(
        rest[2:], flags=('--public', '--private', '--no-dhcp', '--dhcp'))

    if noun == 'image':
        images = state['images']
        if verb == 'list':
            name = _one(options, '--name')
            _print_ids([i for i in images if name in (None, i['name'])],
                       options)
        elif verb == 'create':
            path = _one(options, '--file')
            if not path or not os.path.isfile(path):
                raise Fail('--file %r: no such file' % path)
            with open(path, 'rb') as f:
                data = f.read()
            props = dict(p.split('=', 1) for p in options.get('--property',
                                                              []))
            images.append({
                'id': str(uuid.uuid4()), 'name': positional[0],
                'cloud': cloud, 'disk_format': _one(options, '--disk-format'),
                'container_format': _one(options, '--container-format'),
                'visibility': 'public' if '--public' in options else 'shared',
                'properties': props, 'file': path, 'size': len(data),
                'sha256': hashlib.sha256(data).hexdigest()})
        elif verb == 'delete':
            for name in positional:
                images.remove(_find(images, name, 'image'))
        else:
            raise Fail('image %s: not a command the stand-in knows' % verb)
    elif noun == 'network':
        networks = state['networks']
        if verb == 'list':
            name = _one(options, '--name')
            _print_ids([n for n in networks if name in (None, n['name'])],
                       options)
        elif verb == 'create':
            networks.append({'id': str(uuid.uuid4()), 'name': positional[0],
                             'cloud': cloud, 'ports': 0})
        elif verb == 'delete':
            for name in positional:
                network = _find(networks, name, 'network')
                if network['ports']:
                    raise Fail('Unable to complete operation on network %s. '
                               'There are one or more ports still in use on '
                               'the network.' % network['id'])
                networks.remove(network)
                state['subnets'] = [s for s in state['subnets']
                                    if s['network'] != network['id']]
        else:
            raise Fail('network %s: not a command the stand-in knows' % verb)
    elif noun == 'subnet':
        if verb != 'create':
            raise Fail('subnet %s: not a command the stand-in knows' % verb)
        network = _find(state['networks'], _one(options, '--network'),
                        'network')
        state['subnets'].append({
            'id': str(uuid.uuid4()), 'name': positional[0], 'cloud': cloud,
            'network': network['id'],
            'ip_version': _one(options, '--ip-version'),
            'cidr': _one(options, '--subnet-range'),
            'gateway': _one(options, '--gateway'),
            'enable_dhcp': '--no-dhcp' not in options,
            'dns_nameservers': options.get('--dns-nameserver', [])})
    elif noun == 'router':
        router = _find(state['routers'], positional[0], 'router')
        if verb == 'show':
            print(json.dumps(router))
        elif verb == 'add subnet':
            subnet = _find(state['subnets'], positional[1], 'subnet')
            router['subnets'].append(subnet['id'])
        elif verb == 'remove subnet':
            subnet = _find(state['subnets'], positional[1], 'subnet')
            if subnet['id'] not in router['subnets']:
                raise Fail('Router %s has no interface on subnet %s'
                           % (router['id'], subnet['id']))
            router['subnets'].remove(subnet['id'])
        else:
            raise Fail('router %s: not a command the stand-in knows' % verb)
    else:
        raise Fail('%s: not a command the stand-in knows' % noun)


def main(argv):
    command, args = argv[0], argv[1:]
    if command == 'ini-set':
        ini_set(*args)
    elif command == 'ini-get':
        ini_get(*args)
    elif command == 'ini-del':
        ini_del(*args)
    elif command == 'openstack':
        path = os.environ['NIPXE_FAKE_CLOUD']
        with open(path) as f:
            state = json.load(f)
        try:
            openstack(state, args)
        except (Fail, IndexError) as e:
            print('openstack: %s' % (e or 'bad arguments'), file=sys.stderr)
            return 1
        with open(path + '.part', 'w') as f:
            json.dump(state, f, indent=1)
        os.replace(path + '.part', path)
    else:
        print('fake_cloud.py: unknown command %s' % command, file=sys.stderr)
        return 2
    return 0


if __name__ == '__main__':
    sys.exit(main(sys.argv[1:]))
