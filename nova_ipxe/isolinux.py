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

"""ISOLINUX's configuration: where ISOLINUX finds it, which kernel its
default entry boots, and the configuration we write instead.

The text comes from an untrusted ISO: :func:`kernel_ref` only reads it,
and a reference is used only if it matches :data:`PATH_RE`.
"""

import re
import typing

# Where ISOLINUX looks for its configuration, after its own directory.
CFG_DIRS = ('/boot/isolinux', '/isolinux', '/boot/syslinux', '/syslinux', '/')
CFG_NAMES = ('isolinux.cfg', 'syslinux.cfg')
# Larger than any real isolinux.cfg; bounds what is read and parsed.
MAX_CFG_SIZE = 64 * 1024
# What a reference in isolinux.cfg may look like before we use it.
PATH_RE = re.compile(r'^[A-Za-z0-9._+~/-]{1,255}$')
KERNEL_KEYWORDS = ('kernel', 'linux')


def kernel_ref(text: str) -> typing.Optional[str]:
    """Return the kernel reference of the default entry of isolinux.cfg.

    Handles the forms iPXE's ISOs and hand-made ones use: ``DEFAULT`` a
    label or a kernel, ``LABEL`` blocks with ``KERNEL``/``LINUX``, a
    global ``KERNEL``.  Returns None when no kernel is named.
    """
    default = None
    labels: typing.Dict[str, typing.Optional[str]] = {}
    order = []
    current = None
    global_kernel = None
    menu_default = None
    for raw in text.splitlines():
        words = raw.strip().split(None, 1)
        if not words or words[0].startswith('#'):
            continue
        key = words[0].lower()
        arg = words[1].strip() if len(words) > 1 else ''
        if key == 'default':
            default = arg.split()[0] if arg else None
        elif key == 'label':
            current = arg
            labels.setdefault(current, None)
            order.append(current)
        elif key in KERNEL_KEYWORDS and arg:
            if current is None:
                global_kernel = arg.split()[0]
            elif labels.get(current) is None:
                labels[current] = arg.split()[0]
        elif key == 'menu' and arg.lower() == 'default' and current:
            menu_default = current
    for label in (default, menu_default):
        if label in labels and labels[label]:
            return labels[label]
    if default and default not in labels:
        return default  # DEFAULT may name a kernel directly
    if global_kernel:
        return global_kernel
    for label in order:
        if labels[label]:
            return labels[label]
    return None


def render(kernel: str, initrd: str) -> str:
    """The configuration we write: boot ``kernel`` with ``initrd``.

    Both are absolute paths already checked against :data:`PATH_RE`.
    """
    return ('# Rewritten by nova-ipxe: boot iPXE with the instance script.\n'
            'DEFAULT nova-ipxe\n'
            'PROMPT 0\n'
            'TIMEOUT 0\n'
            'LABEL nova-ipxe\n'
            ' KERNEL %s\n'
            ' INITRD %s\n' % (kernel, initrd))
