//! A connected terminal's SRTP media plane: set up from the `Welcome`'s
//! answer, its path checked by a task running [`PathCheck`], voice sent as
//! SRTP once verified; and [`VoiceReceiver`], which hands out received voice
//! whichever form it came in.

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use ptt_codec::{ClientMsg, MediaAnswer, VoiceHeader};
use tokio::sync::{mpsc, Mutex};
use tracing::Instrument;

use crate::media::{MediaForm, PathCheck, Step};
use crate::plane::{Channel, MediaStats, Plane};
use crate::web::Wire;
use crate::{Error, Voice};

const DATAGRAM: u8 = 0;
const SRTP: u8 = 1;
const FELL_BACK: u8 = 2;

/// The media form, shared by the terminal and its path check task.
#[derive(Debug, Default)]
struct Form(AtomicU8);

impl Form {
    fn get(&self) -> MediaForm {
        match self.0.load(Ordering::Relaxed) {
            SRTP => MediaForm::Srtp,
            FELL_BACK => MediaForm::FellBack,
            _ => MediaForm::Datagram,
        }
    }

    fn set(&self, form: MediaForm) {
        let v = match form {
            MediaForm::Datagram => DATAGRAM,
            MediaForm::Srtp => SRTP,
            MediaForm::FellBack => FELL_BACK,
        };
        self.0.store(v, Ordering::Relaxed);
    }
}

/// One terminal's SRTP media plane (a `Welcome` answered its offer).
#[derive(Debug)]
pub(crate) struct SrtpVoice {
    plane: Arc<Plane>,
    channel: Arc<Channel>,
    form: Arc<Form>,
}

impl SrtpVoice {
    /// Keys the streams of `conn` for `answer`, routes its SSRC on `plane`
    /// and starts the path check (which sends `MediaMode` on `control` if
    /// it falls back). Returns the plane and the queue of received voice.
    pub(crate) fn start(
        plane: Arc<Plane>,
        conn: &quinn::Connection,
        answer: MediaAnswer,
        control: mpsc::UnboundedSender<ClientMsg>,
    ) -> Result<(SrtpVoice, mpsc::UnboundedReceiver<Bytes>), Error> {
        let (channel, voice) = Channel::open(conn, answer.ssrc)?;
        plane.add(channel.clone());
        let form = Arc::new(Form::default());
        tokio::spawn(
            check_path(
                conn.clone(),
                plane.clone(),
                channel.clone(),
                form.clone(),
                control,
            )
            .in_current_span(),
        );
        Ok((
            SrtpVoice {
                plane,
                channel,
                form,
            },
            voice,
        ))
    }

    pub(crate) fn form(&self) -> MediaForm {
        self.form.get()
    }

    pub(crate) fn stats(&self) -> MediaStats {
        self.channel.stats()
    }

    /// Sends the frame as SRTP if the path is verified; `Ok(false)` if not
    /// (the caller sends it as a DATAGRAM).
    pub(crate) fn send_voice(
        &self,
        conn: &quinn::Connection,
        frame: &VoiceHeader,
        opus: &[u8],
    ) -> Result<bool, Error> {
        if self.form.get() != MediaForm::Srtp {
            return Ok(false);
        }
        self.channel
            .send_voice(&self.plane, conn.remote_address(), frame, opus)?;
        Ok(true)
    }
}

/// Runs the path check of `channel` until the connection ends, then stops
/// routing its SSRC.
async fn check_path(
    conn: quinn::Connection,
    plane: Arc<Plane>,
    channel: Arc<Channel>,
    form: Arc<Form>,
    control: mpsc::UnboundedSender<ClientMsg>,
) {
    let mut check = PathCheck::new(Instant::now());
    // SRTP voice received when the last keep-alive report went.
    let mut heard_at_report = 0;
    loop {
        let deadline = check.deadline();
        tokio::select! {
            _ = conn.closed() => break,
            _ = channel.answered.notified() => {
                if check.on_answer(Instant::now()) == Some(Step::Verified) {
                    tracing::debug!(ssrc = channel.ssrc(), "media path verified: SRTP");
                    form.set(MediaForm::Srtp);
                }
            }
            _ = sleep_until(deadline), if deadline.is_some() => {}
        }
        while let Some(step) = check.poll(Instant::now()) {
            match step {
                Step::Probe => {
                    // Verified: a keep-alive report only if voice came since
                    // the last (idle, the QUIC keep-alives hold the NAT
                    // binding on the same 5-tuple).
                    let heard = channel.stats().srtp_received;
                    if form.get() == MediaForm::Srtp && heard == heard_at_report {
                        continue;
                    }
                    heard_at_report = heard;
                    // A lost probe is what the next one is for.
                    let _ = channel.send_report(&plane, conn.remote_address());
                }
                Step::FallBack => {
                    tracing::info!(
                        ssrc = channel.ssrc(),
                        "no SRTCP answer within 3 s: voice stays on QUIC DATAGRAMs"
                    );
                    form.set(MediaForm::FellBack);
                    let _ = control.send(ClientMsg::MediaMode { srtp: false });
                }
                Step::Verified => form.set(MediaForm::Srtp),
            }
        }
    }
    plane.remove(&channel);
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(tokio::time::Instant::from_std(d)).await,
        None => std::future::pending().await,
    }
}

/// Where a terminal's received voice comes from: the QUIC connection's
/// DATAGRAMs and, with SRTP, the media plane's frames (already turned into
/// the DATAGRAM form). Cloning it is cheap; take one with
/// [`Terminal::voice_receiver`](crate::Terminal::voice_receiver) to read
/// voice in a task of its own.
#[derive(Debug, Clone)]
pub struct VoiceReceiver {
    conn: quinn::Connection,
    web: Option<Arc<Wire>>,
    srtp: Option<Arc<Mutex<mpsc::UnboundedReceiver<Bytes>>>>,
    /// The terminal's reception counts, fed with every frame read.
    link: crate::link::Shared,
}

impl VoiceReceiver {
    pub(crate) fn new(
        conn: quinn::Connection,
        web: Option<Arc<Wire>>,
        srtp: Option<mpsc::UnboundedReceiver<Bytes>>,
        link: crate::link::Shared,
    ) -> VoiceReceiver {
        VoiceReceiver {
            conn,
            web,
            srtp: srtp.map(|rx| Arc::new(Mutex::new(rx))),
            link,
        }
    }

    /// Waits for the next voice frame, whichever form it came in.
    /// Undecodable datagrams are skipped. Errors once the connection is gone.
    pub async fn recv(&self) -> Result<Voice, Error> {
        loop {
            let datagram = match &self.srtp {
                None => self.datagram().await?,
                Some(srtp) => {
                    let mut srtp = srtp.lock().await;
                    tokio::select! {
                        biased;
                        Some(d) = srtp.recv() => Some(d),
                        d = self.datagram() => d?,
                    }
                }
            };
            let Some(datagram) = datagram else { continue };
            if let Ok((header, _)) = VoiceHeader::decode(&datagram) {
                self.link.on_frame(&header, std::time::Instant::now());
                return Ok(Voice { header, datagram });
            }
        }
    }

    /// The next QUIC DATAGRAM, its WebTransport header stripped (`None`:
    /// not this session's).
    async fn datagram(&self) -> Result<Option<Bytes>, Error> {
        let datagram = self.conn.read_datagram().await?;
        Ok(match &self.web {
            Some(web) => web.strip_datagram(datagram),
            None => Some(datagram),
        })
    }
}
