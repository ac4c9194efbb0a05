"""Browser test of the dashboard against a real `picloud serve`.

Starts the binary given as argv[1] on the embedded store in a temp data dir (ports 0, the
ready line says which, PICLOUD_ADMIN_TOKEN set), drives Debian's Chromium through Selenium and
chromedriver, and runs the flows below in order (later flows use what earlier ones made).
Screenshots go to BROWSER_OUT (default .ci/browser/out, ignored by git). Prints one line per
flow and closes with `browser: N passed, N failed`; exits 1 on any failure.
"""

import json
import re
import os
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
import urllib.error
import urllib.request

from selenium import webdriver
from selenium.common.exceptions import (
    NoSuchElementException,
    StaleElementReferenceException,
    TimeoutException,
)
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import Select, WebDriverWait

TOKEN = "pc_" + os.urandom(24).hex()
# Plants: if any of these ran, window.__pwned would be set.
IMG = '<img src=x onerror="window.__pwned=1">'
IMG_BARE = "<img src=x onerror=window.__pwned=1>"
SCRIPT = "</script><script>window.__pwned=1</script>"

HELLO_V1 = """// hello: logs two plants and stores one in KV
log::info("%s");
log::warn("%s");
kv::set("plant", "%s");
#{ ok: true, v: 1 }
""" % (IMG.replace('"', '\\"'), SCRIPT, IMG.replace('"', '\\"') + SCRIPT)
HELLO_V2 = HELLO_V1.replace("v: 1", "v: 2")
BROKEN = "let a = 1;\nlet = ;\na\n"


class Node:
    def __init__(self, binary):
        self.dir = tempfile.mkdtemp(prefix="picloud-browser-")
        env = {k: v for k, v in os.environ.items() if k != "PICLOUD_DATABASE_URL"}
        env.update(
            PICLOUD_LISTEN="127.0.0.1:0",
            PICLOUD_ADMIN_LISTEN="127.0.0.1:0",
            PICLOUD_DATA_DIR=os.path.join(self.dir, "data"),
            PICLOUD_ADMIN_TOKEN=TOKEN,
            PICLOUD_WORKERS="2",
            RUST_LOG=os.environ.get("RUST_LOG", "warn"),
        )
        self.stderr = open(os.path.join(self.dir, "stderr"), "w")
        self.proc = subprocess.Popen(
            [binary, "serve"], env=env, stdout=subprocess.PIPE, stderr=self.stderr, text=True
        )
        deadline = time.time() + 30
        line = ""
        while time.time() < deadline:
            line = self.proc.stdout.readline()
            if line.startswith("picloud ready "):
                break
            if not line and self.proc.poll() is not None:
                raise RuntimeError("picloud serve exited before it was ready")
        fields = dict(f.split("=", 1) for f in line.split()[2:])
        self.public = fields["public"]
        self.admin = fields["admin"]

    def api(self, method, path, body=None, token=TOKEN):
        data = None
        headers = {"Authorization": "Bearer " + token}
        if body is not None:
            data = body.encode() if isinstance(body, str) else json.dumps(body).encode()
        req = urllib.request.Request("http://" + self.admin + path, data=data, method=method, headers=headers)
        try:
            with urllib.request.urlopen(req, timeout=10) as r:
                text = r.read().decode()
                return r.status, (json.loads(text) if text else None)
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read().decode() or "null")

    def public_get(self, path):
        try:
            with urllib.request.urlopen("http://" + self.public + path, timeout=10) as r:
                return r.status, r.read().decode()
        except urllib.error.HTTPError as e:
            return e.code, e.read().decode()

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.stderr.close()
        shutil.rmtree(self.dir, ignore_errors=True)


def browser(profile_dir):
    opts = Options()
    opts.binary_location = os.environ.get("CHROMIUM", "/usr/bin/chromium")
    for flag in [
        "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        "--disable-dev-shm-usage", "--window-size=1280,900", "--user-data-dir=" + profile_dir,
    ]:
        opts.add_argument(flag)
    # The console is read at the end: a CSP violation or an uncaught error fails the run.
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    service = Service(executable_path=os.environ.get("CHROMEDRIVER", "/usr/bin/chromedriver"))
    return webdriver.Chrome(service=service, options=opts)


class Flows:
    def __init__(self, node, driver, out):
        self.node = node
        self.d = driver
        self.out = out
        self.base = "http://" + node.admin + "/"
        self.results = []
        self.timings = {}

    # helpers
    def wait(self, cond, timeout=10, what="condition"):
        try:
            # Pages re-render after each change: an element may go stale between two looks.
            return WebDriverWait(
                self.d, timeout, ignored_exceptions=(StaleElementReferenceException, NoSuchElementException)
            ).until(lambda d: cond())
        except TimeoutException:
            raise AssertionError("timed out waiting for " + what)

    def css(self, sel):
        return self.d.find_element(By.CSS_SELECTOR, sel)

    def all(self, sel):
        return self.d.find_elements(By.CSS_SELECTOR, sel)

    def present(self, sel, timeout=10):
        return self.wait(lambda: (self.all(sel) or [None])[0], timeout, sel)

    def go(self, hash_path, ready_sel):
        self.d.execute_script("location.hash = arguments[0]", hash_path)
        return self.present(ready_sel)

    def text(self):
        return self.css("body").text

    def shot(self, name):
        self.d.save_screenshot(os.path.join(self.out, name + ".png"))

    def not_pwned(self, where):
        pwned = self.d.execute_script("return window.__pwned")
        assert pwned is None, "a plant ran on " + where
        # Nothing the plants could have made: no <img> and no <script> besides main.js.
        assert not self.d.execute_script("return document.querySelectorAll('main img').length"), where
        scripts = self.d.execute_script("return [...document.scripts].map(s => s.src)")
        assert all(s.endswith("/assets/main.js") for s in scripts), scripts

    def set_editor(self, text):
        ta = self.present("[data-test=source]")
        self.d.execute_script(
            "arguments[0].value = arguments[1]; arguments[0].dispatchEvent(new Event('input'))", ta, text
        )

    def confirm(self):
        self.present("dialog[open] [data-test=confirm-ok]").click()

    def run(self, name, fn):
        start = time.time()
        try:
            fn()
            self.results.append((name, True))
            print(f"ok    {name} ({time.time() - start:.1f}s)", flush=True)
        except Exception:
            self.results.append((name, False))
            print(f"FAIL  {name}", flush=True)
            traceback.print_exc()
            try:
                self.shot("FAILED-" + name)
            except Exception:
                pass

    # flows
    def sign_in(self):
        self.d.get(self.base)
        field = self.present("[data-test=token]")
        field.send_keys("pc_wrong")
        self.css("[data-test=signin]").click()
        self.wait(lambda: "not valid" in self.text(), what="a 401 message")
        self.shot("signin")
        field = self.css("[data-test=token]")
        field.clear()
        field.send_keys(TOKEN)
        self.css("[data-test=signin]").click()
        role = self.present("[data-test=role]")
        assert "admin" in role.text, role.text
        # The token is in sessionStorage only: no cookie, not in the URL.
        assert self.d.get_cookies() == [], self.d.get_cookies()
        assert TOKEN not in self.d.current_url
        assert self.d.execute_script("return sessionStorage.getItem('picloud.token')") == TOKEN

    def overview(self):
        # A full navigation, timed: navigation start → the overview drawn (not asserted).
        # (From about:blank: a URL differing only in its #fragment would not load a new page.)
        self.d.get("about:blank")
        self.d.get(self.base + "#/")
        self.present("[data-test=revision]")
        self.wait(lambda: self.d.execute_script(
            "return performance.getEntriesByName('picloud-overview-rendered').length"), what="the mark")
        ms = self.d.execute_script(
            "return performance.getEntriesByName('picloud-overview-rendered')[0].startTime")
        nav = self.d.execute_script(
            "const n = performance.getEntriesByType('navigation')[0]; return n ? n.domContentLoadedEventEnd : null")
        self.timings["overview_rendered_ms"] = round(ms, 1)
        self.timings["dom_content_loaded_ms"] = round(nav, 1) if nav else None
        assert "embedded" in self.css("[data-test=store]").text
        status, _ = self.node.api("GET", "/v1/stats")
        assert status == 200, status
        self.present("svg.chart")
        self.shot("overview")

    def create_app(self):
        self.go("#/apps", "[data-test=new-app]").send_keys("demo")
        self.css("[data-test=create-app]").click()
        self.present("[data-test=new-script]")
        status, app = self.node.api("GET", "/v1/apps/demo")
        assert status == 200, app

    def script_error_then_fix(self):
        self.css("[data-test=new-script]").send_keys("hello")
        self.css("[data-test=create-script]").click()
        self.set_editor(BROKEN)
        self.css("[data-test=check]").click()
        marked = self.present(".ed-gutter .err")
        assert marked.get_attribute("data-line") == "2", marked.get_attribute("data-line")
        assert self.css(".ed-marker").is_displayed()
        assert "Line 2" in self.css("[data-test=editor-msg]").text
        # Checking stored nothing.
        assert self.node.api("GET", "/v1/apps/demo/scripts/hello")[0] == 404
        self.css("[data-test=save]").click()
        self.wait(lambda: "Line 2" in self.css("[data-test=editor-msg]").text, what="the save's error")
        self.present(".ed-gutter .err")
        self.shot("editor-error")
        assert self.node.api("GET", "/v1/apps/demo/scripts/hello")[0] == 404
        # An error message carrying a plant, shown as text.
        self.set_editor('import "%s" as m;\n1\n' % IMG_BARE)
        self.css("[data-test=check]").click()
        self.wait(lambda: IMG_BARE in self.css("[data-test=editor-msg]").text, what="the plant as text")
        self.not_pwned("the editor's error")
        self.set_editor(HELLO_V1)
        self.css("[data-test=save]").click()
        self.wait(lambda: self.all("[data-test=version]") and "v1" in self.css("[data-test=version]").text,
                  what="version 1")
        assert not self.all(".ed-gutter .err")
        self.not_pwned("the script page")
        self.shot("editor")

    def route_and_call(self):
        self.go("#/apps/demo/routes", "[data-test=add-row]").click()
        row = self.all("[data-test=routes] tbody tr")[-1]
        inputs = row.find_elements(By.CSS_SELECTOR, "input")
        Select(row.find_element(By.CSS_SELECTOR, "select")).select_by_value("GET")
        inputs[0].send_keys("/hello")
        inputs[1].send_keys("hello")
        self.css("[data-test=save-table]").click()
        self.wait(lambda: "Saved 1 row" in self.text(), what="routes saved")
        # A bad table shows the API's error.
        self.css("[data-test=add-row]").click()
        row = self.all("[data-test=routes] tbody tr")[-1]
        inputs = row.find_elements(By.CSS_SELECTOR, "input")
        inputs[0].send_keys("/x")
        inputs[1].send_keys("nope")
        self.css("[data-test=save-table]").click()
        self.wait(lambda: "invalid_input" in self.text(), what="the API's error")
        self.shot("routes")
        status, body = self.node.public_get("/demo/hello")
        assert status == 200 and '"v":1' in body.replace(" ", ""), (status, body)

    def live_tail(self):
        self.go("#/apps/demo/logs", "[data-test=logs]")
        before = len(self.all("[data-test=log-row]"))
        self.wait(lambda: "live" in self.css("[data-test=live-state]").text, what="the tail running")
        status, _ = self.node.public_get("/demo/hello")
        assert status == 200
        self.wait(lambda: len(self.all("[data-test=log-row]")) > before, timeout=10, what="the new invocation")
        self.all("[data-test=log-row]")[0].click()
        lines = self.present("[data-test=lines]")
        assert IMG in lines.text and SCRIPT in lines.text, lines.text
        self.not_pwned("the logs page")
        self.shot("logs")
        # Search by request id.
        rid = self.css("[data-test=details] dd code").text
        assert len(rid) == 16, rid
        self.css("[data-test=f-request]").send_keys(rid)
        self.wait(lambda: len(self.all("[data-test=log-row]")) == 1, what="one invocation with that id")
        self.css("[data-test=find-request]").click()
        self.wait(lambda: rid in self.css("[data-test=details]").text, what="its details")
        self.css("[data-test=f-request]").clear()
        self.css("[data-test=f-request]").send_keys("x")  # clear() fires no input event
        self.css("[data-test=f-request]").send_keys("\b")
        # Filters: 5xx shows none of these 200s.
        Select(self.css("[data-test=f-status]")).select_by_value("5xx")
        assert not self.all("[data-test=log-row]")
        Select(self.css("[data-test=f-status]")).select_by_value("all")

    def diff_and_rollback(self):
        status, _ = self.node.api("PUT", "/v1/apps/demo/scripts/hello", HELLO_V2)
        assert status == 200
        self.go("#/apps/demo/scripts/hello", "[data-test=diff]")
        Select(self.css("[data-test=diff-from]")).select_by_value("1")
        Select(self.css("[data-test=diff-to]")).select_by_value("2")
        self.css("[data-test=diff]").click()
        out = self.present("[data-test=diff-out]")
        assert "- #{ ok: true, v: 1 }" in out.text and "+ #{ ok: true, v: 2 }" in out.text, out.text
        self.not_pwned("the diff")
        self.shot("diff")
        self.css("[data-test=rollback][data-version='1']").click()
        self.confirm()
        self.wait(lambda: "v3" in self.css("[data-test=version]").text, what="version 3")
        _, script = self.node.api("GET", "/v1/apps/demo/scripts/hello")
        assert script["source"] == HELLO_V1 and script["version"] == 3, script

    def env_and_kv(self):
        self.go("#/apps/demo/env", "[data-test=env-name]").send_keys("API_KEY")
        self.css("[data-test=env-value]").send_keys("s3cret-value")
        self.css("[data-test=env-set]").click()
        self.wait(lambda: "API_KEY" in self.css("[data-test=env]").text if self.all("[data-test=env]") else False,
                  what="the variable listed")
        assert "s3cret-value" not in self.d.page_source
        self.css("[data-test=env-delete]").click()
        self.confirm()
        self.wait(lambda: not self.all("[data-test=env]"), what="the variable gone")
        assert self.node.api("GET", "/v1/apps/demo/env")[1] == []
        # KV: the script's plant, then one set here.
        self.go("#/apps/demo/kv", "[data-test=kv-key-in]").send_keys("note")
        self.css("[data-test=kv-value-in]").send_keys(json.dumps({"text": IMG_BARE + SCRIPT, "n": 1}))
        self.css("[data-test=kv-set]").click()
        value = self.present("[data-test=kv-value]")
        self.wait(lambda: IMG_BARE in self.css("[data-test=kv-value]").text, what="the value as text")
        assert '"n": 1' in value.text, value.text
        keys = [k.text for k in self.all("[data-test=kv-key]")]
        assert keys == ["note", "plant"], keys
        self.all("[data-test=kv-key]")[1].click()
        self.wait(lambda: SCRIPT in self.css("[data-test=kv-value]").text, what="the plant as text")
        self.not_pwned("the KV page")
        self.shot("kv")
        self.all("[data-test=kv-key]")[0].click()
        self.wait(lambda: IMG_BARE in self.css("[data-test=kv-value]").text, what="note shown")
        self.css("[data-test=kv-delete]").click()
        self.confirm()
        self.wait(lambda: [k.text for k in self.all("[data-test=kv-key]")] == ["plant"], what="note deleted")
        assert self.node.api("GET", "/v1/apps/demo/kv/note")[0] == 404

    def deploy_folder(self):
        folder = tempfile.mkdtemp(prefix="picloud-app-")
        app_dir = os.path.join(folder, "shop")
        os.makedirs(app_dir)
        with open(os.path.join(app_dir, "picloud.toml"), "w") as f:
            f.write('app = "shop"  # the app\nmodules = ["prices"]\ndebug = true\n'
                    '[limits]\ntimeout_ms = 2000\n\n[[routes]]\nmethod = "GET"\npath = "/price"\nscript = "price"\n')
        with open(os.path.join(app_dir, "prices.rhai"), "w") as f:
            f.write("fn of(item) { 42 }\n")
        with open(os.path.join(app_dir, "price.rhai"), "w") as f:
            f.write('import "prices" as p;\n#{ price: p::of("tea") }\n')
        try:
            self.go("#/deploy", "[data-test=folder]").send_keys(app_dir)
            self.css("[data-test=deploy]").click()
            self.wait(lambda: "Deployed shop" in self.css("[data-test=deploy-msg]").text, timeout=20,
                      what="the deploy's answer")
            out = self.css("[data-test=deploy-out]").text
            assert "price (endpoint)" in out and "prices (module)" in out, out
            self.shot("deploy")
            status, body = self.node.public_get("/shop/price")
            assert status == 200 and "42" in body, (status, body)
            # A compile error points at file:line:column.
            with open(os.path.join(app_dir, "price.rhai"), "w") as f:
                f.write('import "prices" as p;\nlet = 1;\n')
            self.d.refresh()
            self.present("[data-test=folder]").send_keys(app_dir)
            self.css("[data-test=deploy]").click()
            self.wait(lambda: "shop/price.rhai:2:" in self.css("[data-test=deploy-msg]").text, timeout=20,
                      what="file:line:column")
        finally:
            shutil.rmtree(folder, ignore_errors=True)

    def read_token(self):
        status, made = self.node.api("POST", "/v1/tokens", {"name": "viewer", "role": "read", "apps": ["demo"]})
        assert status == 201, made
        self.css("[data-test=signout]").click()
        self.present("[data-test=token]").send_keys(made["token"])
        self.css("[data-test=signin]").click()
        role = self.present("[data-test=role]")
        assert "read" in role.text, role.text
        nav = self.css("#nav").text
        assert "Tokens" not in nav and "Audit" not in nav, nav
        self.go("#/apps", "[data-test=apps]")
        assert not self.all("[data-test=new-app]") and not self.all("[data-test=delete-app]")
        self.go("#/apps/demo/scripts", "[data-test=scripts]")
        assert not self.all("[data-test=new-script]")
        self.go("#/apps/demo/scripts/hello", "[data-test=diff]")
        assert not self.all("[data-test=save]") and not self.all("[data-test=delete-script]")
        assert not self.all("[data-test=rollback]")
        assert self.css("[data-test=source]").get_attribute("readonly") is not None
        self.css("[data-test=check]").click()  # checking is a read
        self.wait(lambda: "Compiles" in self.css("[data-test=editor-msg]").text, what="the check")
        self.shot("read-only-script")
        for page, test in [("routes", "routes"), ("schedules", "schedules"), ("triggers", "triggers")]:
            self.go("#/apps/demo/" + page, f"[data-test={test}]")
            assert not self.all("[data-test=save-table]") and not self.all("[data-test=add-row]"), page
        self.go("#/apps/demo/env", "h1")
        assert not self.all("[data-test=env-name]")
        self.go("#/apps/demo/kv", "[data-test=kv]")
        assert not self.all("[data-test=kv-set]")
        self.go("#/deploy", "h1")
        assert not self.all("[data-test=deploy]")
        # A page the token may not read: a clear 403, not a blank page.
        self.go("#/tokens", ".msg.error")
        assert "403" in self.css(".msg.error").text
        self.go("#/apps/shop/scripts", ".msg.error")
        assert "403" in self.css(".msg.error").text
        self.not_pwned("the read-only pages")

    def toml_subset(self):
        # The page's picloud.toml reader (toml.js) on the README's example and on the errors the
        # CLI's reader gives (control/src/cli/deploy.rs: serde with deny_unknown_fields).
        cases = [
            ('app = "todo"                 # required\nhosts = ["todo.example.com"] # optional\n'
             'debug = false\nmodules = ["store"]\nprune = false\n[limits]\ntimeout_ms = 2000\n'
             '[[routes]]\nmethod = "GET"\npath = "/items"\nscript = "list"\n',
             {"app": "todo", "hosts": ["todo.example.com"], "debug": False, "modules": ["store"], "prune": False,
              "limits": {"timeout_ms": 2000},
              "routes": [{"method": "GET", "path": "/items", "script": "list"}]}),
            ("app = 'lit\\eral'\nmodules = [\n  \"a\",  # one\n  'b',\n]\n",
             {"app": "lit\\eral", "modules": ["a", "b"], "prune": False}),
            ('app = "x\\u00e9\\n"\n[[routes]]\nmethod = "*"\npath = "/a"\nscript = "s"\n'
             '[[routes]]\nmethod = "GET"\npath = "/b"\nscript = "t"\n',
             {"app": "x\u00e9\n", "modules": [], "prune": False,
              "routes": [{"method": "*", "path": "/a", "script": "s"}, {"method": "GET", "path": "/b", "script": "t"}]}),
            ('app = "a"\napps = 1\n', "picloud.toml:2: unknown key apps"),
            ('hosts = []\n', "missing key app"),
            ('app = "a"\ndebug = "yes"\n', "picloud.toml:2: debug: expected a boolean"),
            ('app = "a"\n[[routes]]\nmethod = "GET"\n', "missing path"),
            ('app = "a"\n[[routes]]\nmethod = "GET"\nverb = 1\n', "picloud.toml:4: unknown key verb"),
            ('app = "a"\n[server]\n', "picloud.toml:2: unknown table [server]"),
            ('app = "a" b\n', "unexpected text"),
            ('app = "a\n', "newline in a string"),
        ]
        got = self.d.execute_async_script(
            "const [cases, done] = [arguments[0], arguments[arguments.length - 1]];"
            "import('/assets/toml.js').then((m) => done(cases.map(([src]) => {"
            "  try { return m.parseManifest(src); } catch (e) { return 'ERR ' + e.message; } })))"
            ".catch((e) => done('import failed: ' + e));",
            cases,
        )
        assert isinstance(got, list), got
        for (src, want), out in zip(cases, got):
            if isinstance(want, str):
                assert isinstance(out, str) and out.startswith("ERR ") and want in out, (src, out)
            else:
                assert out == want, (src, out)

    def overview_with_stats(self):
        # The overview drawn from the node's real GET /v1/stats after real traffic: the cards,
        # both SVG charts, and the per-app table with sorting, checked against the API's own
        # numbers.
        for _ in range(20):
            status, _ = self.node.public_get("/demo/hello")
            assert status == 200, status
        status, body = self.node.api("GET", "/v1/stats")
        assert status == 200, (status, body)
        stats = body
        by_requests = sorted(stats["apps"], key=lambda a: (-a["requests"], a["app"]))
        assert by_requests[0]["app"] == "demo" and by_requests[0]["requests"] >= 20, stats["apps"]
        self.d.get("about:blank")
        self.d.get(self.base + "#/")
        self.present("svg.chart path")
        assert len(self.all("svg.chart")) == 2
        assert re.fullmatch(r"\d+ / \d+", self.css("[data-test=engines]").text), self.css("[data-test=engines]").text
        assert re.search(r"\d+s", self.css("[data-test=uptime]").text), self.css("[data-test=uptime]").text
        rows = lambda: [r.text.split()[0] for r in self.all("[data-test=stats-apps] tbody tr")]
        assert sorted(rows()) == sorted(a["app"] for a in stats["apps"]), rows()
        # The table opens sorted by requests, busiest first; a click flips the order.
        self.wait(lambda: rows()[0] == "demo", what="busiest app first")
        [b for b in self.all(".sort") if b.text.startswith("Requests")][0].click()
        self.wait(lambda: rows()[-1] == "demo", what="sorted by requests, ascending")
        [b for b in self.all(".sort") if b.text.startswith("App")][0].click()
        self.wait(lambda: rows() == sorted(rows()) or rows() == sorted(rows(), reverse=True), what="sorted by name")
        self.not_pwned("the overview")
        self.shot("overview-stats")

    def admin_pages(self):
        # Settings, schedules, triggers, tokens and audit with the admin token.
        self.d.get("about:blank")
        self.d.get(self.base)
        self.present("[data-test=role]")
        self.go("#/apps/demo", "[data-test=hosts]").send_keys("demo.example.com")
        self.css("[data-test=debug]").click()
        self.css("[data-test=save-settings]").click()
        self.wait(lambda: "Saved." in self.text(), what="settings saved")
        app = self.node.api("GET", "/v1/apps/demo")[1]
        assert app["hosts"] == ["demo.example.com"] and app["debug"] is True, app
        self.go("#/apps/demo/schedules", "[data-test=add-row]").click()
        row = self.all("[data-test=schedules] tbody tr")[-1]
        for el, text in zip(row.find_elements(By.CSS_SELECTOR, "input"), ["tick", "0 * * * *", "hello"]):
            el.send_keys(text)
        self.css("[data-test=save-table]").click()
        self.wait(lambda: "Saved 1 row" in self.text(), what="schedule saved")
        self.d.refresh()
        self.wait(lambda: len(self.all("[data-test=schedules] tbody tr")) == 1, what="schedule listed")
        assert "-" != self.all("[data-test=schedules] tbody tr td")[-1].text  # next run shown
        self.go("#/apps/demo/triggers", "[data-test=add-row]").click()
        row = self.all("[data-test=triggers] tbody tr")[-1]
        for el, text in zip(row.find_elements(By.CSS_SELECTOR, "input"), ["ping", "hello"]):
            el.send_keys(text)
        self.css("[data-test=save-table]").click()
        self.wait(lambda: "Saved 1 row" in self.text(), what="trigger saved")
        self.go("#/tokens", "[data-test=tokens]")
        self.css("[data-test=token-name]").send_keys("ci-deployer")
        Select(self.css("[data-test=token-role]")).select_by_value("deploy")
        self.css("[data-test=token-create]").click()
        secret = self.present("[data-test=token-secret]")
        assert secret.get_attribute("value").startswith("pc_")
        self.go("#/audit", "[data-test=audit]")
        assert "/v1/apps/demo/routes" in self.css("[data-test=audit]").text
        self.not_pwned("the admin pages")
        self.shot("audit")
        # Deleting an imported module shows the 409's reason; deleting the app needs a confirm.
        self.go("#/apps/shop/scripts/prices", "[data-test=delete-script]").click()
        self.confirm()
        self.wait(lambda: "imported by price" in self.css("[data-test=editor-msg]").text, what="the 409 reason")
        assert "conflict" in self.css("[data-test=editor-msg]").text
        self.go("#/apps", "[data-test=apps]")
        links = [a.text for a in self.all("[data-test=app-link]")]
        self.all("[data-test=delete-app]")[links.index("shop")].click()
        self.present("dialog[open] [data-test=confirm-cancel]").click()
        assert self.node.api("GET", "/v1/apps/shop")[0] == 200
        self.all("[data-test=delete-app]")[links.index("shop")].click()
        self.confirm()
        self.wait(lambda: [a.text for a in self.all("[data-test=app-link]")] == ["demo"], what="shop deleted")
        assert self.node.api("GET", "/v1/apps/shop")[0] == 404

    def narrow_and_xss_sweep(self):
        # Every page that shows the plants, once more, at 360 px wide, then a fresh load.
        self.d.set_window_size(360, 800)
        self.go("#/apps/demo/logs", "[data-test=logs]")
        self.wait(lambda: self.all("[data-test=log-row]"), what="rows")
        self.all("[data-test=log-row]")[0].click()
        self.wait(lambda: IMG in self.css("[data-test=lines]").text, what="lines")
        width = self.d.execute_script("return document.documentElement.scrollWidth")
        wide = self.d.execute_script(
            "return [...document.querySelectorAll('body *')].filter(e => e.getBoundingClientRect().right > "
            "document.documentElement.clientWidth + 1).slice(0, 5).map(e => e.tagName + '.' + e.className)")
        assert width <= 380, f"page is {width}px wide at 360px: {wide}"
        self.shot("logs-360")
        self.go("#/apps/demo/kv", "[data-test=kv]")
        self.not_pwned("the 360px sweep")
        self.d.set_window_size(1280, 900)
        self.d.get("about:blank")
        self.d.get(self.base + "#/apps/demo/scripts/hello")
        self.present("[data-test=source]")
        self.not_pwned("a fresh load of the script page")
        # Dark colours follow prefers-color-scheme.
        self.d.execute_cdp_cmd("Emulation.setEmulatedMedia", {"features": [{"name": "prefers-color-scheme", "value": "dark"}]})
        bg = self.d.execute_script("return getComputedStyle(document.documentElement).backgroundColor")
        assert bg == "rgb(21, 24, 23)", bg
        self.shot("editor-dark")
        self.d.execute_cdp_cmd("Emulation.setEmulatedMedia", {"features": []})
        # A malformed or unknown route is a message, not a blank page.
        self.go("#/nowhere/%zz", ".msg.error")


def console_clean(flows):
    """No CSP violation and no uncaught error in the console over the whole run (failed API
    calls, which the pages show, are logged by Chromium as failed loads and are expected)."""
    bad = [
        e["message"] for e in flows.d.get_log("browser")
        if "Content Security Policy" in e["message"] or "Uncaught" in e["message"]
        or ("SEVERE" == e["level"] and "Failed to load resource" not in e["message"])
    ]
    assert not bad, bad


def main():
    binary = sys.argv[1]
    out = os.environ.get("BROWSER_OUT") or os.path.join(os.path.dirname(os.path.abspath(__file__)), "out")
    os.makedirs(out, exist_ok=True)
    for old in os.listdir(out):
        if old.endswith(".png"):
            os.remove(os.path.join(out, old))
    node = Node(binary)
    profile = tempfile.mkdtemp(prefix="picloud-chromium-")
    driver = None
    try:
        driver = browser(profile)
        f = Flows(node, driver, out)
        for name in ["sign_in", "overview", "create_app", "script_error_then_fix", "route_and_call",
                     "live_tail", "diff_and_rollback", "env_and_kv", "deploy_folder", "toml_subset", "overview_with_stats",
                     "admin_pages", "read_token", "narrow_and_xss_sweep"]:
            f.run(name, getattr(f, name))
        f.run("console_clean", lambda: console_clean(f))
        passed = sum(1 for _, ok in f.results if ok)
        failed = len(f.results) - passed
        print(f"browser: timings {json.dumps(f.timings)} (navigation start to the overview drawn; not asserted)")
        print(f"browser: screenshots in {out}")
        print(f"browser: {passed} passed, {failed} failed")
        if failed:
            with open(os.path.join(node.dir, "stderr")) as e:
                tail = e.read()[-4000:]
            if tail:
                print("node stderr (tail):\n" + tail)
        return 1 if failed else 0
    finally:
        if driver is not None:
            driver.quit()
        node.stop()
        shutil.rmtree(profile, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
