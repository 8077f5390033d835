"""MQTT broker provisioning for the host harness.

The harness needs an MQTT broker.  :func:`start_broker` supplies one from one
of three sources:

* ``external``  -- an existing broker given by URL
  (``mqtt://[user:pass@]host[:port]`` or ``mqtts://...``); nothing is started.
* ``mosquitto`` -- a ``mosquitto`` subprocess on a free loopback port, with a
  generated config (``set_tcp_nodelay true`` for low latency) and a log file
  that is quoted in error messages.
* ``amqtt``     -- the pure-Python amqtt broker, embedded in this process and
  run on its own asyncio event loop in a background thread.

Example::

    with start_broker() as broker:          # mosquitto if installed, else amqtt
        print(broker.describe())
        client.connect(broker.info.host, broker.info.port)

``BrokerInfo.url`` contains the password (if any) so that it can be handed
on to something that has to connect; use :meth:`BrokerInfo.redacted_url`, or
``str(info)`` / ``repr(info)``, for anything that is displayed or logged.
"""
