"""The dashboard in a real headless Chromium: submit through the page (which calls the API)
and watch the leaderboard, the leader and the staircase update."""

import shutil

import pytest

from tests.arena.helpers import Server, cli

selenium = pytest.importorskip("selenium")
from selenium import webdriver  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support import expected_conditions as EC  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402


def _browser():
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    if not (chromium and driver):
        pytest.fail("chromium and chromedriver are required (make browser-deps installs them)")
    opts = webdriver.ChromeOptions()
    opts.binary_location = chromium
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"):
        opts.add_argument(arg)
    return webdriver.Chrome(options=opts, service=webdriver.ChromeService(executable_path=driver))


@pytest.fixture(scope="module")
def browser():
    """One Chromium for the module (each test's server has its own port, so its own origin
    and localStorage)."""
    b = _browser()
    yield b
    b.quit()


@pytest.fixture
def server(arena_home):
    s = Server(arena_home)
    s.admin = s.start()
    yield s
    s.stop()


def _export(codec, path):
    r = cli("export-solution", "--codec", codec, "--out", str(path))
    assert r.returncode == 0, r.stderr


def _submit(browser, path):
    browser.execute_script("document.querySelector('#submit-result').innerHTML = ''")
    browser.find_element(By.ID, "file").send_keys(str(path))
    browser.find_element(By.CSS_SELECTOR, "#submit button").click()
    text = WebDriverWait(browser, 20).until(
        lambda b: b.execute_script("return document.querySelector('#submit-result a')?.textContent")
    )
    return int(text.lstrip("#"))


def test_submit_in_the_browser_and_see_the_leader_change(server, browser, tmp_path):
    _export("zstd", tmp_path / "zstd.py")
    _export("lossless", tmp_path / "lossless.py")
    browser.get(server.url + "/?competition=lossless")
    wait = WebDriverWait(browser, 120, poll_frequency=0.5)
    wait.until(EC.presence_of_element_located((By.CSS_SELECTOR, "#tabs button.active")))
    assert browser.find_element(By.CSS_SELECTOR, "#tabs button.active").text == "lossless"
    browser.find_element(By.ID, "key").send_keys(server.admin)
    first = _submit(browser, tmp_path / "zstd.py")
    leader = f"#leaderboard tr.leader[data-id='{first}']"
    wait.until(EC.presence_of_element_located((By.CSS_SELECTOR, leader)))
    second = _submit(browser, tmp_path / "lossless.py")
    leader = f"#leaderboard tr.leader[data-id='{second}']"
    wait.until(EC.presence_of_element_located((By.CSS_SELECTOR, leader)))
    ids = browser.execute_script(  # one read: the table re-renders every two seconds
        "return [...document.querySelectorAll('#leaderboard tbody tr')].map(r => r.dataset.id)"
    )
    assert ids == [str(second), str(first)]
    wait.until(lambda b: b.find_element(By.ID, "staircase").get_attribute("data-steps") == "2")
    # the submission page shows per-tensor results and its place in the lineage
    browser.get(f"{server.url}/submissions/{first}")
    wait.until(EC.text_to_be_present_in_element((By.ID, "state"), "done"))
    n = browser.execute_script("return document.querySelectorAll('#results tbody tr').length")
    assert n == 2
    assert f"#{first}" in browser.find_element(By.ID, "lineage").text


FAILING = b"""
def compress_data(data):
    raise ValueError("nope")

def decompress_data(data):
    return data
"""


def test_a_failed_entry_shows_why_in_the_words_the_viewer_may_see(server, browser, tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_bytes(FAILING)
    browser.get(server.url + "/?competition=lossless")
    wait = WebDriverWait(browser, 120, poll_frequency=0.5)
    wait.until(EC.presence_of_element_located((By.CSS_SELECTOR, "#tabs button.active")))
    browser.find_element(By.ID, "key").send_keys(server.admin)
    sid = _submit(browser, bad)
    row = (By.CSS_SELECTOR, f"#recent tr[data-id='{sid}'] td.why")  # public: the category
    wait.until(EC.text_to_be_present_in_element(row, "all tensors failed: compress failed"))
    assert not browser.find_elements(By.CSS_SELECTOR, f"#leaderboard tr[data-id='{sid}']")
    browser.get(f"{server.url}/submissions/{sid}")  # its author (key in the page) sees why
    wait.until(EC.text_to_be_present_in_element((By.ID, "why"), "nope"))
    assert browser.find_element(By.ID, "why").text.startswith("Failed: all tensors failed")
    browser.execute_script("localStorage.removeItem('arenaKey')")  # a stranger does not
    browser.refresh()
    wait.until(EC.text_to_be_present_in_element((By.ID, "why"), "compress failed"))
    assert "nope" not in browser.find_element(By.TAG_NAME, "body").text
