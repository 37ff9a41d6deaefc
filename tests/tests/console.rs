//! The command-room console (issue 13) end to end: the real gateway
//! process serving the console page and its API, the page in a headless
//! Chromium driven over WebDriver (support/browser.rs) with a fake
//! microphone playing speech, and simulated terminals of the reference
//! library on the other side.
//!
//! Every test needs Chromium and chromedriver (scripts/setup.sh installs
//! them); `PTT_SKIP_BROWSER=1` skips them on purpose. Assertions read the
//! page's test hooks (`window.pttConsole`, CONSOLE.md) and the DOM by
//! `data-testid`; screenshots of the main views go to
//! `<target>/console-screenshots/` (and `docs/screenshots/` with
//! `PTT_UPDATE_SCREENSHOTS=1`).

use ptt_tests::browser::{self, Browser, Options, Page, WAIT};

/// The harness itself: Chromium starts headless through chromedriver, a
/// page of ours on http://127.0.0.1 is a secure context with WebTransport
/// and WebCodecs' Opus encoder, and the fake microphone plays the speech
/// WAV: its level, measured in the page by an `AnalyserNode`, is close to
/// the file's (a missing or silent file would read 0).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_browser_harness_hears_the_speech_wav_through_the_fake_microphone() {
    if browser::skipped() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let wav = dir.path().join("speech.wav");
    let source = browser::speech_wav(&wav, 7, 4);
    // The loudest 2048-sample window of the file at 48 kHz is about the
    // loudest 683-sample window of the 16 kHz source (the WAV is
    // normalised to -3 dBFS from it).
    let peak = f64::from(source.iter().map(|s| s.unsigned_abs()).max().unwrap()) / 32768.0;
    let loudest = source
        .windows(683)
        .step_by(160)
        .map(browser::rms)
        .fold(0.0, f64::max)
        * 0.708
        / peak;
    let page = Page::serve(MIC_PAGE).await;
    let b = Browser::start(Options {
        name: "harness".into(),
        microphone: Some(wav),
    })
    .await;
    b.goto(&page.url).await;
    let platform = b
        .wait_until(
            "the page's checks",
            WAIT,
            "return window.mic && window.mic.state !== 'starting' && window.mic;",
        )
        .await;
    assert_eq!(platform["state"], "listening", "{platform:#}");
    assert_eq!(platform["secure"], true, "{platform:#}");
    assert_eq!(platform["webtransport"], true, "{platform:#}");
    assert_eq!(platform["opus"], true, "{platform:#}");
    assert_eq!(platform["rate"], 48000, "{platform:#}");
    // Two seconds of listening covers several syllables of the signal.
    let heard = b
        .wait_until(
            "two seconds of microphone input",
            WAIT,
            "return window.mic.polls >= 40 && window.mic;",
        )
        .await;
    let max = heard["maxRms"].as_f64().unwrap();
    eprintln!("fake microphone: loudest window RMS {max:.3} (file {loudest:.3})");
    assert!(
        max > 0.3 * loudest && max < 2.0 * loudest,
        "the microphone's level {max:.3} is not the file's {loudest:.3}: {heard:#}"
    );
    b.screenshot("harness-microphone").await;
}

/// A page of our own measuring the microphone and the platform.
const MIC_PAGE: &str = r#"<!doctype html>
<html><body><h1>microphone</h1><pre id="out"></pre><script>
window.mic = {state: "starting", maxRms: 0, polls: 0, rate: 0, secure: window.isSecureContext,
  webtransport: typeof WebTransport === "function", opus: false, error: null};
(async () => {
  try {
    if (typeof AudioEncoder === "function") {
      const s = await AudioEncoder.isConfigSupported({codec: "opus", sampleRate: 48000,
        numberOfChannels: 1, bitrate: 24000});
      mic.opus = !!s.supported;
    }
    const stream = await navigator.mediaDevices.getUserMedia({audio: {channelCount: 1,
      echoCancellation: false, noiseSuppression: false, autoGainControl: false}});
    const ctx = new AudioContext({sampleRate: 48000});
    await ctx.resume();
    const an = ctx.createAnalyser();
    an.fftSize = 2048;
    ctx.createMediaStreamSource(stream).connect(an);
    mic.rate = ctx.sampleRate;
    const buf = new Float32Array(an.fftSize);
    mic.state = "listening";
    setInterval(() => {
      an.getFloatTimeDomainData(buf);
      let sum = 0;
      for (const x of buf) sum += x * x;
      mic.maxRms = Math.max(mic.maxRms, Math.sqrt(sum / buf.length));
      mic.polls++;
      document.getElementById("out").textContent = JSON.stringify(mic, null, 1);
    }, 50);
  } catch (e) {
    mic.state = "error";
    mic.error = String(e);
  }
})();
</script></body></html>"#;
