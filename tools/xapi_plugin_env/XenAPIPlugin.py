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

"""Stand-in for xapi's XenAPIPlugin module (dom0 side), for tests.

Behaves as xapi's python3 XenAPIPlugin.dispatch: one argument, an XML-RPC
methodCall of (session_ref, {str: str}); prints one methodResponse; an
exception becomes [XENAPI_PLUGIN_FAILURE, fn, ClassName, message]. The
session handed to the function is a placeholder: the stand-in offers no
local XAPI socket.
"""

import sys
import xmlrpc.client as xmlrpclib


class Failure(Exception):
    """Compatibility with plugins written against the XenServer 5.5 API."""

    def __init__(self, code, params):
        Exception.__init__(self)
        self.params = [code] + params

    def __str__(self):
        return str(self.params)


class _LocalSession(object):
    def __init__(self, ref):
        self._session = ref


def success_message(result):
    return xmlrpclib.dumps(({'Status': 'Success', 'Value': result},), '',
                           True)


def failure_message(description):
    return xmlrpclib.dumps(({'Status': 'Failure',
                             'ErrorDescription': description},), '', True)


def dispatch(fn_table):
    if len(sys.argv) != 2:
        raise Exception('Incorrect number of commandline arguments')
    params, methodname = xmlrpclib.loads(sys.argv[1])
    session_id, args = params[0], params[1]
    if methodname in fn_table:
        try:
            result = fn_table[methodname](_LocalSession(session_id), args)
            print(success_message(result))
        except SystemExit:
            raise
        except Failure as e:
            print(failure_message(e.params))
        except Exception as e:
            print(failure_message(['XENAPI_PLUGIN_FAILURE', methodname,
                                   e.__class__.__name__, str(e)]))
    else:
        print(failure_message(['UNKNOWN_XENAPI_PLUGIN_FUNCTION',
                               methodname]))
