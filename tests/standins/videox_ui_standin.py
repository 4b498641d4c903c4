#!/usr/bin/env python3
"""Stand-in for VideoX-Fun's Gradio app (wan22ctl/agent/videox_app.py) in test images.

Started by the real launcher (`python3 -m wan22ctl.agent.videox ui`) exactly as the real app
is: the launch plan arrives in WAN22_VIDEOX_LAUNCH and the working folder is the VideoX-Fun
checkout. It serves HTTP on the planned port: `/` answers like a UI, `/plan` returns the plan.
Behaviour is steered by models/standin.json on the host-mounted models folder:
{"delay_s": 2} listens after a delay; {"mode": "hang"} never listens; {"mode": "crash"} exits 3.
"""
import http.server
import json
import os
import sys
import time

plan = json.loads(os.environ["WAN22_VIDEOX_LAUNCH"])
control = {}
if os.path.exists("models/standin.json"):
    control = json.load(open("models/standin.json"))
print(f"stand-in UI: plan {json.dumps(plan, sort_keys=True)}", flush=True)
if control.get("mode") == "crash":
    print("stand-in UI: CUDA out of memory (simulated crash)", flush=True)
    sys.exit(3)
if control.get("mode") == "hang":
    print("stand-in UI: loading the model forever, never listening", flush=True)
    while True:
        time.sleep(5)
time.sleep(float(control.get("delay_s", 0)))


class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        if self.path == "/plan":
            body = json.dumps({**plan, "cwd": os.getcwd()}).encode()
            ctype = "application/json"
        else:
            body = b"<html><title>VideoX-Fun stand-in</title></html>"
            ctype = "text/html"
        self.send_response(200)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


server = http.server.ThreadingHTTPServer((plan["server_name"], int(plan["server_port"])), Handler)
print(f"stand-in UI: listening on {plan['server_name']}:{plan['server_port']}", flush=True)
server.serve_forever()
