use super::*;

const T: fn(u32) -> TerminalId = TerminalId;

fn req(t: u32, class: Class, priority: u8) -> Request {
    Request {
        terminal: T(t),
        class,
        priority,
        limit: None,
    }
}

fn normal(t: u32, priority: u8) -> Request {
    req(t, Class::Normal, priority)
}

fn drain(m: &mut Machine) -> Vec<Event> {
    std::iter::from_fn(|| m.poll_event()).collect()
}

fn granted(events: &[Event]) -> Vec<(u32, u16)> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::Granted { burst, .. } => Some((burst.terminal.0, burst.id)),
            _ => None,
        })
        .collect()
}

#[test]
fn an_idle_floor_is_granted_with_the_talk_limit() {
    let t0 = Instant::now();
    let mut m = Machine::new(Config::default());
    assert_eq!(m.poll_timeout(), None);
    m.handle_request(t0, normal(1, 80));
    let ev = drain(&mut m);
    assert_eq!(granted(&ev), vec![(1, 1)]);
    assert!(matches!(ev[0], Event::Granted { limit, .. } if limit == Duration::from_secs(30)));
    assert_eq!(m.holder().map(|b| b.terminal), Some(T(1)));
    assert_eq!(m.poll_timeout(), Some(t0 + Duration::from_secs(30)));
    assert_eq!(
        m.poll_timer(),
        Some((Timer::TalkLimit, t0 + Duration::from_secs(30)))
    );
}

#[test]
fn the_holder_asking_again_changes_nothing() {
    let t0 = Instant::now();
    let mut m = Machine::new(Config::default());
    m.handle_request(t0, normal(1, 80));
    drain(&mut m);
    m.handle_request(t0, req(1, Class::Emergency, 255));
    assert!(drain(&mut m).is_empty());
    assert_eq!(m.holder().map(|b| b.class), Some(Class::Normal));
}

#[test]
fn queue_orders_by_class_then_priority_then_arrival() {
    let t0 = Instant::now();
    let mut m = Machine::new(Config::default());
    // An emergency burst: nothing below pre-empts it, everyone queues.
    m.handle_request(t0, req(1, Class::Emergency, 200));
    m.handle_request(t0, normal(2, 60));
    m.handle_request(t0, normal(3, 80));
    m.handle_request(t0, normal(4, 80));
    m.handle_request(t0, req(5, Class::ImminentPeril, 10));
    let ev = drain(&mut m);
    assert_eq!(
        ev[1..],
        [
            Event::Queued {
                terminal: T(2),
                position: 1
            },
            // 3 outranks 2: 3 first, 2 moves back.
            Event::Queued {
                terminal: T(3),
                position: 1
            },
            Event::Queued {
                terminal: T(2),
                position: 2
            },
            // 4 equals 3 but came later.
            Event::Queued {
                terminal: T(4),
                position: 2
            },
            Event::Queued {
                terminal: T(2),
                position: 3
            },
            // Imminent peril outranks every normal request, whatever its priority.
            Event::Queued {
                terminal: T(5),
                position: 1
            },
            Event::Queued {
                terminal: T(3),
                position: 2
            },
            Event::Queued {
                terminal: T(4),
                position: 3
            },
            Event::Queued {
                terminal: T(2),
                position: 4
            },
        ]
    );
    // Releases grant in queue order, straight from talker to talker.
    let mut order = Vec::new();
    for _ in 0..5 {
        let holder = m.holder().unwrap().terminal;
        m.handle_release(t0, holder);
        let ev = drain(&mut m);
        assert!(!ev.contains(&Event::Idle) || m.holder().is_none());
        order.extend(granted(&ev).into_iter().map(|(t, _)| t));
    }
    assert_eq!(order, vec![5, 3, 4, 2]);
    assert!(m.holder().is_none());
}

#[test]
fn release_hands_over_without_idle_and_renumbers() {
    let t0 = Instant::now();
    let mut m = Machine::new(Config::default());
    m.handle_request(t0, normal(1, 80));
    m.handle_request(t0, normal(2, 80));
    m.handle_request(t0, normal(3, 80));
    drain(&mut m);
    m.handle_release(t0, T(1));
    let ev = drain(&mut m);
    assert_eq!(granted(&ev), vec![(2, 2)]);
    assert!(!ev.contains(&Event::Idle));
    assert_eq!(
        ev.last(),
        Some(&Event::Queued {
            terminal: T(3),
            position: 1
        })
    );
    m.handle_release(t0, T(2));
    m.handle_release(t0, T(3));
    let ev = drain(&mut m);
    assert_eq!(granted(&ev), vec![(3, 3)]);
    assert_eq!(ev.last(), Some(&Event::Idle));
}

#[test]
fn a_queued_release_withdraws_the_request() {
    let t0 = Instant::now();
    let mut m = Machine::new(Config::default());
    for t in 1..=3 {
        m.handle_request(t0, normal(t, 80));
    }
    drain(&mut m);
    m.handle_release(t0, T(2));
    assert_eq!(
        drain(&mut m),
        vec![Event::Queued {
            terminal: T(3),
            position: 1
        }]
    );
    assert_eq!(m.queue_len(), 1);
    // A release by a stranger does nothing.
    m.handle_release(t0, T(42));
    assert!(drain(&mut m).is_empty());
}

#[test]
fn higher_priority_preempts_equal_does_not() {
    let t0 = Instant::now();
    let mut m = Machine::new(Config::default());
    m.handle_request(t0, normal(1, 80));
    m.handle_request(t0, normal(2, 80));
    drain(&mut m);
    assert_eq!(m.holder().unwrap().terminal, T(1));
    m.handle_request(t0, normal(3, 150));
    let ev = drain(&mut m);
    assert_eq!(
        ev[0],
        Event::Revoked {
            terminal: T(1),
            burst: 1,
            cause: RevokeCause::Preempted
        }
    );
    assert_eq!(granted(&ev), vec![(3, 2)]);
    assert!(!ev.contains(&Event::Idle));
    // The pre-empted talker is not queued; 2 still waits first.
    assert_eq!(m.queue_len(), 1);
}

#[test]
fn emergency_preempts_any_normal_and_compares_priority_among_emergencies() {
    let t0 = Instant::now();
    let mut m = Machine::new(Config::default());
    m.handle_request(t0, normal(1, 255));
    m.handle_request(t0, req(2, Class::Emergency, 0));
    let ev = drain(&mut m);
    assert!(ev.contains(&Event::Revoked {
        terminal: T(1),
        burst: 1,
        cause: RevokeCause::Preempted
    }));
    assert_eq!(m.holder().unwrap().terminal, T(2));
    m.handle_request(t0, req(3, Class::Emergency, 0));
    assert_eq!(
        drain(&mut m),
        vec![Event::Queued {
            terminal: T(3),
            position: 1
        }]
    );
    m.handle_request(t0, req(4, Class::Emergency, 1));
    assert!(drain(&mut m)
        .iter()
        .any(|e| matches!(e, Event::Revoked { terminal, .. } if *terminal == T(2))));
    assert_eq!(m.holder().unwrap().terminal, T(4));
}

#[test]
fn a_queued_terminal_can_preempt_by_asking_higher() {
    let t0 = Instant::now();
    let mut m = Machine::new(Config::default());
    m.handle_request(t0, normal(1, 80));
    m.handle_request(t0, normal(2, 80));
    drain(&mut m);
    m.handle_request(t0, req(2, Class::Emergency, 80));
    let ev = drain(&mut m);
    assert_eq!(granted(&ev), vec![(2, 2)]);
    assert_eq!(m.queue_len(), 0);
}

#[test]
fn talk_limit_revokes_at_the_limit_not_before() {
    let t0 = Instant::now();
    let mut m = Machine::new(Config {
        talk_limit: Duration::from_secs(30),
        queue_capacity: 4,
    });
    m.handle_request(t0, normal(1, 80));
    m.handle_request(t0 + Duration::from_secs(1), normal(2, 80));
    drain(&mut m);
    m.handle_timeout(t0 + Duration::from_millis(29_999));
    assert!(drain(&mut m).is_empty());
    m.handle_timeout(t0 + Duration::from_secs(30));
    let ev = drain(&mut m);
    assert_eq!(
        ev[0],
        Event::Revoked {
            terminal: T(1),
            burst: 1,
            cause: RevokeCause::BurstTooLong
        }
    );
    assert_eq!(granted(&ev), vec![(2, 2)]);
    // The new burst has its own deadline.
    assert_eq!(m.poll_timeout(), Some(t0 + Duration::from_secs(60)));
    m.set_talk_limit(Duration::from_secs(5));
    m.handle_release(t0 + Duration::from_secs(31), T(2));
    drain(&mut m);
    assert_eq!(m.poll_timeout(), None);
}

#[test]
fn a_full_queue_denies_but_never_blocks_preemption() {
    let t0 = Instant::now();
    let mut m = Machine::new(Config {
        talk_limit: Duration::from_secs(30),
        queue_capacity: 2,
    });
    for t in 1..=3 {
        m.handle_request(t0, normal(t, 80));
    }
    drain(&mut m);
    m.handle_request(t0, normal(4, 80));
    assert_eq!(
        drain(&mut m),
        vec![Event::Denied {
            terminal: T(4),
            cause: DenyCause::NoResources
        }]
    );
    m.handle_request(t0, normal(5, 200));
    assert_eq!(granted(&drain(&mut m)), vec![(5, 2)]);
}

#[test]
fn leaving_frees_the_floor_or_the_queue_slot() {
    let t0 = Instant::now();
    let mut m = Machine::new(Config::default());
    for t in 1..=3 {
        m.handle_request(t0, normal(t, 80));
    }
    drain(&mut m);
    m.handle_leave(t0, T(2));
    assert_eq!(
        drain(&mut m),
        vec![Event::Queued {
            terminal: T(3),
            position: 1
        }]
    );
    m.handle_leave(t0, T(1));
    assert_eq!(granted(&drain(&mut m)), vec![(3, 2)]);
    m.handle_leave(t0, T(3));
    assert_eq!(drain(&mut m), vec![Event::Idle]);
    m.handle_leave(t0, T(3));
    assert!(drain(&mut m).is_empty());
}

#[test]
fn burst_ids_wrap_and_skip_zero() {
    let t0 = Instant::now();
    let mut m = Machine::new(Config::default());
    let mut last = 0;
    for _ in 0..70_000 {
        m.handle_request(t0, normal(1, 80));
        let ev = drain(&mut m);
        let (_, id) = granted(&ev)[0];
        assert_ne!(id, 0);
        assert_ne!(id, last);
        last = id;
        m.handle_release(t0, T(1));
        drain(&mut m);
    }
}

/// Random operations keep the invariants: never a panic, one holder at most,
/// the holder never queued, the queue sorted, every grant preceded by the
/// end of the previous burst.
#[test]
fn random_operations_keep_the_invariants() {
    let t0 = Instant::now();
    let mut m = Machine::new(Config {
        talk_limit: Duration::from_secs(3),
        queue_capacity: 4,
    });
    let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut rand = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let mut now = t0;
    let mut holder: Option<TerminalId> = None;
    for _ in 0..20_000 {
        now += Duration::from_millis(rand() % 500);
        let t = T(1 + (rand() % 8) as u32);
        match rand() % 5 {
            0 | 1 => {
                let class = Class::ALL[(rand() % 3) as usize];
                m.handle_request(now, req(t.0, class, (rand() % 4) as u8 * 50));
            }
            op @ (2 | 3) => {
                // The holder releasing or leaving ends its burst without an
                // event of its own: the next grant or Idle follows.
                if holder == Some(t) {
                    holder = None;
                }
                if op == 2 {
                    m.handle_release(now, t);
                } else {
                    m.handle_leave(now, t);
                }
            }
            _ => {
                if let Some(deadline) = m.poll_timeout() {
                    now = now.max(deadline);
                    m.handle_timeout(now);
                }
            }
        }
        while let Some(ev) = m.poll_event() {
            match ev {
                Event::Granted { burst, .. } => {
                    assert!(holder.is_none(), "granted {burst:?} while {holder:?} holds");
                    holder = Some(burst.terminal);
                }
                Event::Revoked { terminal, .. } => {
                    assert_eq!(holder, Some(terminal));
                    holder = None;
                }
                Event::Idle => {
                    assert!(holder.is_none());
                }
                Event::Queued { position, .. } => assert!(usize::from(position) <= m.queue_len()),
                Event::Denied { .. } => {}
            }
        }
        assert_eq!(
            m.holder().map(|b| b.terminal),
            holder,
            "events tell the holder"
        );
        if let Some(h) = m.holder() {
            assert!(m.queue.iter().all(|w| w.request.terminal != h.terminal));
            assert_eq!(
                m.poll_timeout(),
                Some(h.granted_at + Duration::from_secs(3))
            );
        }
        let ranks: Vec<_> = m
            .queue
            .iter()
            .map(|w| (w.request.rank(), std::cmp::Reverse(w.arrival)))
            .collect();
        assert!(
            ranks.windows(2).all(|p| p[0] > p[1]),
            "queue sorted: {ranks:?}"
        );
        assert!(m.queue.len() <= 4);
    }
}

#[test]
fn a_request_can_carry_its_own_talk_limit() {
    let t0 = Instant::now();
    let mut m = Machine::new(Config::default());
    let sos = Request {
        limit: Some(Duration::from_secs(10)),
        ..req(1, Class::Emergency, 80)
    };
    m.handle_request(t0, sos);
    assert!(
        matches!(drain(&mut m)[0], Event::Granted { limit, .. } if limit == Duration::from_secs(10))
    );
    assert_eq!(m.poll_timeout(), Some(t0 + Duration::from_secs(10)));
    m.handle_timeout(t0 + Duration::from_secs(10));
    assert_eq!(
        drain(&mut m)[0],
        Event::Revoked {
            terminal: T(1),
            burst: 1,
            cause: RevokeCause::BurstTooLong
        }
    );
}
