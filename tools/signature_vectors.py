#!/usr/bin/env python3
"""Write tests/unit/signature_vectors.json (run from the checkout).

The vectors are what a menu server in any language checks itself
against: valid requests with the canonical text and the HMAC, and
refusals with the exact reason nova_ipxe.signature gives.  Deterministic:
fixed keys, times and identities.
"""

import json
import os
import sys
import urllib.parse

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(
    __file__))))

from nova_ipxe import signature  # noqa: E402

OUT = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(
    __file__))), 'tests', 'unit', 'signature_vectors.json')
KEY = 'lab-shared-key-0123456789abcdef'
NOW = 1796619000
UUID = '096e5bf5-35f0-4977-a344-cb3cfeacaf6c'
VICTIM = '8d0f7b6e-3c2a-4b1d-9e8f-7a6b5c4d3e2f'


def query(fields, kid, ts, sig, tail=()):
    pairs = [(k, fields[k]) for k in signature.FIELDS if k in fields]
    pairs += [('ts', str(ts)), ('kid', kid), ('sig', sig)] + list(tail)
    return '&'.join('%s=%s' % (k, urllib.parse.quote(v, safe=''))
                    for k, v in pairs)


def valid(name, key, kid, ts, path, fields, tail=(), now=NOW):
    sig = signature.sign(key, kid, ts, path, fields)
    return {'name': name, 'key': key, 'kid': kid, 'ts': ts, 'now': now,
            'path': path, 'fields': fields,
            'canonical': signature.canonical(kid, ts, path, fields),
            'sig': sig, 'query': query(fields, kid, ts, sig, tail),
            'keys': {kid: key}}


def main():
    ok = [
        valid('static IPv4 NIC', KEY, 'k2', NOW - 400, '/menu.ipxe',
              {'uuid': UUID, 'hostname': 'vm-1', 'mac': 'fa:16:3e:09:a6:40',
               'ip': '192.0.2.10'}),
        valid('IPv6 address, no hostname, percent-encoded path',
              'another key, with spaces and UTF-8: \u00e9\u00e9', '2026-12',
              NOW + 200, '/boot%20menus/m.ipxe',
              {'uuid': VICTIM, 'mac': 'fa:16:3e:12:34:56',
               'ip': '2001:db8::10'}),
        valid('DHCP menu NIC: ip after sig is not signed', '0123456789abcdef',
              '1', NOW - 86400, '/', {'uuid': VICTIM, 'hostname': 'demo-1',
                                      'mac': 'fa:16:3e:00:00:0b'},
              tail=[('ip', '203.0.113.5')]),
        valid('a Latin-1 server name (Caf\u00e9 1 -> caf\u00e9-1) in '
              'Punycode, a UTF-8 path', KEY, 'k2', NOW, '/men%C3%BC.ipxe',
              {'uuid': UUID, 'hostname': 'xn--caf-1-dsa',
               'mac': 'fa:16:3e:09:a6:40', 'ip': '192.0.2.10'}),
    ]
    base = ok[0]
    keys = base['keys']
    q = base['query']
    sig = base['sig']

    def bad(name, reason, query=q, path='/menu.ipxe', **extra):
        v = {'name': name, 'path': path, 'keys': keys, 'query': query,
             'now': NOW, 'reason': reason}
        v.update(extra)
        return v

    def swap(old, new, text=q):
        assert old in text, old
        return text.replace(old, new, 1)

    ts = str(base['ts'])
    # The v1 forgery: a tenant's override path carried "\n" + fields, so
    # the tenant's own ISO held a signature for another server's uuid.
    v1_forged = signature.hmac.new(
        KEY.encode(), ('nova-ipxe-menu-v1\nkid=k2\nts=%s\npath=/menu.ipxe\n'
                       'uuid=%s\nhostname=x\nmac=fa:16:3e:09:a6:40\n'
                       'ip=192.0.2.10' % (ts, VICTIM)).encode(),
        signature.hashlib.sha256).hexdigest()
    forged_q = query({'uuid': VICTIM, 'hostname': 'x',
                      'mac': 'fa:16:3e:09:a6:40', 'ip': '192.0.2.10'},
                     'k2', base['ts'], v1_forged)
    refused = [
        bad("another instance's MAC", 'signature mismatch',
            swap('a6%3A40', 'a6%3A41')),
        bad('another address', 'signature mismatch',
            swap('192.0.2.10', '192.0.2.99')),
        bad('a field dropped', 'signature mismatch',
            swap('hostname=vm-1&', '')),
        bad('a second mac before the signed one', 'mac appears 2 times',
            'mac=fa%3A16%3A3e%3A00%3A00%3A01&' + q),
        bad('another path', 'signature mismatch', path='/other.ipxe'),
        bad('unknown key id', "unknown key id 'k9'", swap('kid=k2', 'kid=k9')),
        bad('no signature', 'no sig parameter', q[:q.index('&sig=')]),
        bad('the timestamp changed', 'signature mismatch',
            swap('ts=' + ts, 'ts=%d' % (base['ts'] + 1))),
        bad('v1 forgery: a v1 signature over a path that carried another '
            "server's uuid", 'signature mismatch', forged_q),
        bad('a line break in the path', 'the path holds the control or '
            'format character U+000A',
            path='/menu.ipxe%0Auuid=' + VICTIM + '%0Ahostname=x'),
        bad('a right-to-left override in the path', 'the path holds the '
            'control or format character U+202E', path='/menu%E2%80%AE.ipxe'),
        bad('a path that is not UTF-8', 'the path is not percent-encoded '
            'UTF-8', path='/menu%FF.ipxe'),
        bad('sig with a non-ASCII digit', 'sig is not 64 lowercase hex '
            'digits', swap(sig, sig[:-1] + '%D9%A3')),
        bad('sig in upper case', 'sig is not 64 lowercase hex digits',
            swap(sig, sig.upper())),
        bad('sig too short', 'sig is not 64 lowercase hex digits',
            swap(sig, sig[:-2])),
        bad('ts with a plus sign', 'ts is not ASCII decimal digits',
            swap('ts=' + ts, 'ts=%2B' + ts)),
        bad('ts with a leading space', 'ts is not ASCII decimal digits',
            swap('ts=' + ts, 'ts=%20' + ts)),
        bad('ts with an underscore', 'ts is not ASCII decimal digits',
            swap('ts=' + ts, 'ts=%s_%s' % (ts[:4], ts[4:]))),
        bad('ts in Arabic-Indic digits', 'ts is not ASCII decimal digits',
            swap('ts=' + ts, 'ts=' + urllib.parse.quote(''.join(
                chr(0x660 + int(d)) for d in ts)))),
        bad('ts with a leading zero', 'ts is not ASCII decimal digits',
            swap('ts=' + ts, 'ts=0' + ts)),
        bad('signed 301 s in the future (max_skew 300)',
            'signed 301 seconds in the future, more than 300',
            now=base['ts'] - 301),
        bad('older than max_age', 'signed 3601 seconds ago, more than 3600',
            now=base['ts'] + 3601, max_age=3600),
        bad('a host name in upper case', 'hostname is not in canonical form',
            swap('hostname=vm-1', 'hostname=VM-1')),
        bad('a host name that is not ASCII', 'hostname is not ASCII text',
            swap('hostname=vm-1', 'hostname=v%C3%A9-1')),
        bad('an IPv4 address with a leading zero', 'ip is not in canonical '
            'form', swap('192.0.2.10', '192.0.2.010')),
        bad('a MAC in upper case', 'mac is not in canonical form',
            swap('fa%3A16%3A3e%3A09%3Aa6%3A40',
                 'FA%3A16%3A3E%3A09%3AA6%3A40')),
        bad('a value that is not UTF-8', 'unparsable query: '
            'UnicodeDecodeError', swap('hostname=vm-1', 'hostname=vm%FF')),
        bad('ts twice', 'ts appears 2 times', 'ts=1&' + q),
    ]
    for v in refused:
        try:
            signature.verify(v['keys'], v['path'], v['query'], now=v['now'],
                             max_age=v.get('max_age'))
        except signature.InvalidSignature as e:
            assert str(e) == v['reason'], (v['name'], str(e))
        else:
            raise AssertionError('accepted: %s' % v['name'])
    for v in ok:
        signature.verify(v['keys'], v['path'], v['query'], now=v['now'])
    doc = {
        'description': (
            'Test vectors for nova_ipxe.signature (HMAC-SHA256 over the '
            'canonical form nova-ipxe-menu-v2, see the module docstring '
            'and doc/source/admin/menus.rst). Keys are UTF-8; sig is '
            'lowercase hex. "valid": verify(keys, path, query, now) '
            'returns fields; "invalid": verify(keys, path, query, now, '
            'max_age (null: none), max_skew 300) refuses with reason. '
            'Written by tools/signature_vectors.py.'),
        'version': signature.VERSION,
        'max_skew': signature.MAX_SKEW,
        'valid': ok,
        'invalid': refused,
    }
    with open(OUT, 'w', encoding='utf-8') as f:
        json.dump(doc, f, indent=1, ensure_ascii=True)
        f.write('\n')


if __name__ == '__main__':
    main()
