# The light: state, brightness, the output it drives, and the event record of
# every change (sequence number, command id, source, device timestamps).
import clock

ON = "ON"
OFF = "OFF"


class Light:
    def __init__(self, output):
        self.output = output
        self.on = False
        self.brightness = 255
        self.seq = 0
        self.last = None  # body of the last event (without t_tx)
        output.write(False, self.brightness)

    def apply(self, cmd_id, src, state, brightness, t_rx):
        """Apply a validated command. Returns the event body (a JSON fragment
        without braces and without t_tx, which each transport adds)."""
        on = self.on if state is None else state
        if brightness is not None:
            if brightness == 0:
                on = False  # dark; the last non-zero brightness is kept for ON
            else:
                self.brightness = brightness
                if state is None:
                    on = True  # Home Assistant: a brightness alone turns it on
        self.output.write(on, self.brightness)
        t_pin = clock.now()
        self.on = on
        self.seq += 1
        self.last = (
            '"seq":%d,"id":"%s","src":"%s","state":"%s","brightness":%d,"t_rx":%d,"t_pin":%d'
            % (self.seq, cmd_id, src, ON if on else OFF, self.brightness, t_rx, t_pin)
        )
        return self.last

    def toggle(self, cmd_id, t_rx):
        return self.apply(cmd_id, "button", not self.on, None, t_rx)

    def state_body(self):
        return '"seq":%d,"state":"%s","brightness":%d' % (
            self.seq,
            ON if self.on else OFF,
            self.brightness,
        )
