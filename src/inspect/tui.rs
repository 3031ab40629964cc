//! The terminal UI of `ironflow inspect` (ratatui): the run's timeline on the left, its state
//! at the cursor on the right (each step's status and duration, the selected step's output or
//! error as formatted JSON), the keys at the bottom.

use std::time::{Duration, Instant};

use ratatui::crossterm::event::{self, Event, KeyCode, KeyEvent, KeyEventKind};
use ratatui::layout::{Constraint, Direction, Layout};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, List, ListItem, ListState, Paragraph, Wrap};
use ratatui::{DefaultTerminal, Frame};
use serde_json::Value;

use super::{InspectOptions, Move, Session};
use crate::client::{Client, ClientError};

const HELP: &str = "↑/↓ step  n/N next/prev failure  g/G first/last  t time  ←/→ select step  e edit output  p pause  r resume  f follow  space replay  q quit";

/// What the keyboard is doing.
enum Mode {
    Browse,
    /// Typing an instant to go to.
    Time(String),
}

struct App {
    session: Session,
    mode: Mode,
    message: String,
    follow: bool,
    replay: Option<Duration>,
    last_tick: Instant,
}

pub async fn run(client: Client, options: InspectOptions) -> Result<(), ClientError> {
    let session = Session::open(client, &options).await?;
    let replay = options
        .replay
        .then(|| Duration::from_secs_f64(1.0 / options.speed.clamp(0.1, 100.0)));
    let mut app = App {
        session,
        mode: Mode::Browse,
        message: String::new(),
        follow: false,
        replay,
        last_tick: Instant::now(),
    };
    let mut terminal = ratatui::init();
    let result = app.event_loop(&mut terminal).await;
    ratatui::restore();
    result
}

impl App {
    async fn event_loop(&mut self, terminal: &mut DefaultTerminal) -> Result<(), ClientError> {
        loop {
            terminal
                .draw(|f| self.draw(f))
                .map_err(|e| ClientError::Invalid(format!("terminal: {e}")))?;
            let ready = event::poll(Duration::from_millis(100))
                .map_err(|e| ClientError::Invalid(format!("terminal: {e}")))?;
            if ready {
                let ev =
                    event::read().map_err(|e| ClientError::Invalid(format!("terminal: {e}")))?;
                if let Event::Key(key) = ev
                    && key.kind == KeyEventKind::Press
                    && !self.key(key, terminal).await
                {
                    return Ok(());
                }
            }
            self.tick().await;
        }
    }

    /// Replay and follow run on a clock.
    async fn tick(&mut self) {
        let now = Instant::now();
        if let Some(every) = self.replay
            && now.duration_since(self.last_tick) >= every
        {
            self.last_tick = now;
            if self.session.cursor + 1 >= self.session.entries.len() {
                self.replay = None;
                self.message = "replay finished".into();
            } else {
                let r = self.session.go(Move::Next).await;
                self.report(r.map(|()| String::new()));
            }
        }
        if self.follow && now.duration_since(self.last_tick) >= Duration::from_millis(500) {
            self.last_tick = now;
            match self.session.reload_timeline().await {
                Ok(true) => {
                    let r = self.session.go(Move::Last).await;
                    let r = match r {
                        Ok(()) => self.session.refresh_current().await,
                        e => e,
                    };
                    self.report(r.map(|()| "new history".to_owned()));
                }
                Ok(false) => {}
                Err(e) => self.message = e.to_string(),
            }
        }
    }

    fn report(&mut self, result: Result<String, ClientError>) {
        match result {
            Ok(m) if m.is_empty() => {}
            Ok(m) => self.message = m,
            Err(e) => self.message = e.to_string().replace('\n', " "),
        }
    }

    /// Handles a key; false to quit.
    async fn key(&mut self, key: KeyEvent, terminal: &mut DefaultTerminal) -> bool {
        if let Mode::Time(text) = &mut self.mode {
            match key.code {
                KeyCode::Enter => {
                    let at = text.clone();
                    self.mode = Mode::Browse;
                    let r = self.session.go_to_time(&at).await;
                    self.report(r.map(|()| format!("at {at}")));
                }
                KeyCode::Esc => self.mode = Mode::Browse,
                KeyCode::Backspace => {
                    text.pop();
                }
                KeyCode::Char(c) => text.push(c),
                _ => {}
            }
            return true;
        }
        let moves = match key.code {
            KeyCode::Char('q') | KeyCode::Esc => return false,
            KeyCode::Down | KeyCode::Char('j') => Some(Move::Next),
            KeyCode::Up | KeyCode::Char('k') => Some(Move::Previous),
            KeyCode::Char('g') | KeyCode::Home => Some(Move::First),
            KeyCode::Char('G') | KeyCode::End => Some(Move::Last),
            KeyCode::Char('n') => Some(Move::NextFailure),
            KeyCode::Char('N') => Some(Move::PreviousFailure),
            _ => None,
        };
        if let Some(m) = moves {
            let r = self.session.go(m).await;
            self.report(r.map(|()| String::new()));
            return true;
        }
        match key.code {
            KeyCode::Right | KeyCode::Char('l') | KeyCode::Tab => {
                let n = self.session.steps().len();
                if n > 0 {
                    self.session.step = (self.session.step + 1) % n;
                }
            }
            KeyCode::Left | KeyCode::Char('h') => {
                let n = self.session.steps().len();
                if n > 0 {
                    self.session.step = (self.session.step + n - 1) % n;
                }
            }
            KeyCode::Char('t') => self.mode = Mode::Time(String::new()),
            KeyCode::Char('f') => {
                self.follow = !self.follow;
                self.message = if self.follow {
                    "following the run live".into()
                } else {
                    "stopped following".into()
                };
            }
            KeyCode::Char(' ') => {
                self.replay = match self.replay {
                    Some(_) => None,
                    None => Some(Duration::from_millis(250)),
                };
            }
            KeyCode::Char('p') => {
                let r = self.session.pause().await;
                self.report(r);
            }
            KeyCode::Char('r') => {
                let r = self.session.resume().await;
                self.report(r);
            }
            KeyCode::Char('e') => {
                let r = self.edit(terminal).await;
                self.report(r);
            }
            _ => {}
        }
        true
    }

    /// Opens the selected step's output in `$EDITOR` (the terminal handed over meanwhile) and
    /// sends what was saved: an injection for a paused run, a patch otherwise.
    async fn edit(&mut self, terminal: &mut DefaultTerminal) -> Result<String, ClientError> {
        let Some(step) = self.session.selected_step() else {
            return Ok("no step selected".into());
        };
        let step_id = step["stepId"].as_str().unwrap_or_default().to_owned();
        let current = if step["output"].is_null() {
            Value::Null
        } else {
            step["output"].clone()
        };
        let path = std::env::temp_dir().join(format!(
            "ironflow-inspect-{}-{}.json",
            std::process::id(),
            step["sequence"].as_i64().unwrap_or(0)
        ));
        std::fs::write(
            &path,
            serde_json::to_string_pretty(&current).unwrap_or_default() + "\n",
        )
        .map_err(|e| ClientError::Invalid(format!("writing {}: {e}", path.display())))?;
        let editor = std::env::var("VISUAL")
            .or_else(|_| std::env::var("EDITOR"))
            .unwrap_or_else(|_| "vi".into());
        ratatui::restore();
        let status = std::process::Command::new("sh")
            .arg("-c")
            .arg(format!("{editor} \"$1\""))
            .arg("sh")
            .arg(&path)
            .status();
        *terminal = ratatui::init();
        let status = status.map_err(|e| ClientError::Invalid(format!("starting {editor}: {e}")))?;
        if !status.success() {
            return Ok(format!("{editor} exited with {status}; nothing sent"));
        }
        let text = std::fs::read_to_string(&path)
            .map_err(|e| ClientError::Invalid(format!("reading {}: {e}", path.display())))?;
        let _ = std::fs::remove_file(&path);
        let output: Value = serde_json::from_str(&text)
            .map_err(|e| ClientError::Invalid(format!("the edited output is not JSON: {e}")))?;
        if output == current {
            return Ok("unchanged; nothing sent".into());
        }
        self.session.edit_step(&step_id, &output).await
    }

    fn draw(&self, f: &mut Frame<'_>) {
        let s = &self.session;
        let rows = Layout::default()
            .direction(Direction::Vertical)
            .constraints([
                Constraint::Length(1),
                Constraint::Min(5),
                Constraint::Length(2),
            ])
            .split(f.area());
        let at = s.cursor_at().unwrap_or("-");
        let header = format!(
            "run {} · {} · now {} · entry {}/{} at {}{}{}",
            s.run,
            s.current["function_id"].as_str().unwrap_or("?"),
            s.current["status"].as_str().unwrap_or("?"),
            s.cursor + 1,
            s.entries.len(),
            at,
            if self.follow { " · following" } else { "" },
            if self.replay.is_some() {
                " · replaying"
            } else {
                ""
            },
        );
        f.render_widget(
            Paragraph::new(header).style(Style::default().add_modifier(Modifier::BOLD)),
            rows[0],
        );
        let columns = Layout::default()
            .direction(Direction::Horizontal)
            .constraints([Constraint::Percentage(45), Constraint::Percentage(55)])
            .split(rows[1]);
        self.draw_timeline(f, columns[0]);
        self.draw_state(f, columns[1]);
        let footer = match &self.mode {
            Mode::Time(text) => format!("go to time (RFC 3339, Enter/Esc): {text}▏"),
            Mode::Browse => self.message.clone(),
        };
        f.render_widget(
            Paragraph::new(vec![
                Line::from(footer),
                Line::from(Span::styled(HELP, Style::default().fg(Color::DarkGray))),
            ]),
            rows[2],
        );
    }

    fn draw_timeline(&self, f: &mut Frame<'_>, area: ratatui::layout::Rect) {
        let items: Vec<ListItem<'_>> = self
            .session
            .entries
            .iter()
            .map(|e| {
                let time = e.at.get(11..23).unwrap_or(&e.at);
                let style = if e.is_failure() {
                    Style::default().fg(Color::Red)
                } else if e.significant {
                    Style::default().fg(Color::Yellow)
                } else {
                    Style::default()
                };
                ListItem::new(Line::from(vec![
                    Span::raw(format!("{time} ")),
                    Span::styled(e.summary.clone(), style),
                ]))
            })
            .collect();
        let mut state = ListState::default();
        state.select(Some(self.session.cursor));
        let list = List::new(items)
            .block(Block::default().borders(Borders::ALL).title("Timeline"))
            .highlight_style(Style::default().add_modifier(Modifier::REVERSED))
            .highlight_symbol("▶ ");
        f.render_stateful_widget(list, area, &mut state);
    }

    fn draw_state(&self, f: &mut Frame<'_>, area: ratatui::layout::Rect) {
        let s = &self.session;
        let steps = s.steps();
        let parts = Layout::default()
            .direction(Direction::Vertical)
            .constraints([
                Constraint::Length(u16::try_from(steps.len().clamp(1, 12)).unwrap_or(12) + 3),
                Constraint::Min(3),
            ])
            .split(area);
        let mut lines = vec![Line::from(format!(
            "status {}",
            s.state["status"].as_str().unwrap_or("?")
        ))];
        for (i, step) in steps.iter().enumerate() {
            let marker = if i == s.step { "▶" } else { " " };
            let edited = if step["injected"] == true {
                " (injected)"
            } else if step["patched"] == true {
                " (patched)"
            } else {
                ""
            };
            let duration = step["durationMs"]
                .as_i64()
                .map_or(String::new(), |d| format!("{d} ms"));
            lines.push(Line::from(format!(
                "{marker} {:<20} {:<10} {:>8}{edited}",
                step["name"].as_str().unwrap_or("?"),
                step["status"].as_str().unwrap_or("?"),
                duration,
            )));
        }
        if steps.is_empty() {
            lines.push(Line::from("  no steps yet"));
        }
        f.render_widget(
            Paragraph::new(lines).block(
                Block::default()
                    .borders(Borders::ALL)
                    .title("State at cursor"),
            ),
            parts[0],
        );
        let detail = match s.selected_step() {
            Some(step) => {
                let mut text = String::new();
                if !step["error"].is_null() {
                    text.push_str("error:\n");
                    text.push_str(
                        &serde_json::to_string_pretty(&step["error"]).unwrap_or_default(),
                    );
                    text.push('\n');
                }
                text.push_str("output:\n");
                text.push_str(&serde_json::to_string_pretty(&step["output"]).unwrap_or_default());
                if !step["originalOutput"].is_null() {
                    text.push_str("\noriginal output:\n");
                    text.push_str(
                        &serde_json::to_string_pretty(&step["originalOutput"]).unwrap_or_default(),
                    );
                }
                text
            }
            None => String::new(),
        };
        let title = s
            .selected_step()
            .and_then(|st| st["name"].as_str().map(|n| format!("Step {n}")))
            .unwrap_or_else(|| "Step".into());
        f.render_widget(
            Paragraph::new(detail)
                .wrap(Wrap { trim: false })
                .block(Block::default().borders(Borders::ALL).title(title)),
            parts[1],
        );
    }
}
