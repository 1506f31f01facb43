//! The HTML the app serves: the voting page (the seed's layout), the sign-in callback
//! page and the "database unavailable" page, plus the static assets compiled into the
//! binary (no CDN, no third-party script).

use crate::config::SignInConfig;
use crate::votes::{Tally, Team, leading_team};
use std::fmt::Write as _;

/// Escapes text for HTML element content and double-quoted attributes.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            _ => out.push(c),
        }
    }
    out
}

/// JSON made safe to sit inside a `<script type="application/json">` element.
fn script_json(value: &serde_json::Value) -> String {
    value
        .to_string()
        .replace('<', "\\u003c")
        .replace('>', "\\u003e")
        .replace('&', "\\u0026")
}

fn emoji(candidate: &str) -> &'static str {
    match Team::parse(candidate) {
        Some(Team::Cats) => "🐱",
        Some(Team::Dogs) => "🐶",
        None => "🗳️",
    }
}

fn head(title: &str, extra: &str) -> String {
    format!(
        "<!doctype html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <title>{}</title>\n<link rel=\"icon\" href=\"/static/favicon.svg\" type=\"image/svg+xml\">\n\
         <link rel=\"stylesheet\" href=\"/static/style.css\">\n{extra}</head>\n",
        escape(title)
    )
}

/// The voting page: nav with sign in / sign out, the leader message, the two cards, and
/// the recent votes.
pub fn index(tally: &Tally, sign_in: &SignInConfig) -> String {
    let config = script_json(&sign_in.to_client_json());
    let mut html = head(
        "CATS v DOGS",
        &format!(
            "<script type=\"application/json\" id=\"gatehouse-config\">{config}</script>\n\
             <script type=\"module\" src=\"/static/app.js\"></script>\n"
        ),
    );
    let leader = leading_team(tally.cats, tally.dogs);
    let card = |team: Team, count: i64| {
        let name = team.as_str();
        let lower = name.to_ascii_lowercase();
        let class = if leader == Some(team) { " leading" } else { "" };
        format!(
            "<section class=\"card {lower}{class}\" id=\"{lower}-card\">\n\
             <div class=\"emoji\" aria-hidden=\"true\">{}</div>\n\
             <h3><span id=\"{lower}-count\">{count}</span> votes</h3>\n\
             <button type=\"button\" class=\"vote\" data-team=\"{name}\">Vote for {name}</button>\n\
             </section>\n",
            emoji(name)
        )
    };
    let _ = write!(
        html,
        "<body>\n<nav>\n<span class=\"brand\">CATS v DOGS</span>\n\
         <span class=\"user\" id=\"user\"></span>\n\
         <button type=\"button\" id=\"sign-in\">Sign In with {provider}</button>\n\
         <button type=\"button\" id=\"sign-out\" hidden>Sign Out</button>\n</nav>\n<main>\n\
         <p class=\"notice\" id=\"signed-out\">You are signed out. Sign in to vote.</p>\n\
         <p class=\"notice warning\" id=\"auth-message\" hidden></p>\n\
         <h2 id=\"leader\">{leader_message}</h2>\n<div class=\"cards\">\n{cats}{dogs}</div>\n\
         <h3>Recent Votes</h3>\n<ul id=\"recent\">\n",
        provider = escape(&sign_in.provider_label),
        leader_message = escape(&tally.leader_message()),
        cats = card(Team::Cats, tally.cats),
        dogs = card(Team::Dogs, tally.dogs),
    );
    for vote in &tally.recent {
        let _ = writeln!(
            html,
            "<li><span class=\"emoji\" aria-hidden=\"true\">{}</span> A vote for <b>'{}'</b> was cast at <time datetime=\"{}\">{}</time></li>",
            emoji(&vote.candidate),
            escape(&vote.candidate),
            vote.time_cast.rfc3339(),
            vote.time_cast
        );
    }
    html.push_str("</ul>\n</main>\n</body>\n</html>\n");
    html
}

/// Where the sign-in popup lands: hands the fragment to the page that opened it.
pub fn callback() -> String {
    let mut html = head(
        "Signing in…",
        "<script type=\"module\" src=\"/static/callback.js\"></script>\n",
    );
    html.push_str(
        "<body>\n<main>\n<p class=\"notice\" id=\"status\">Signing in…</p>\n</main>\n</body>\n</html>\n",
    );
    html
}

/// What a browser sees while the database is down (503).
pub fn unavailable() -> String {
    let mut html = head("CATS v DOGS — temporarily unavailable", "");
    html.push_str(
        "<body>\n<nav><span class=\"brand\">CATS v DOGS</span></nav>\n<main>\n\
         <h2>The votes are temporarily unavailable</h2>\n\
         <p class=\"notice warning\">The database cannot be reached right now. \
         This page recovers by itself when it returns; try again in a few seconds.</p>\n\
         <p><a href=\"/\">Reload</a></p>\n</main>\n</body>\n</html>\n",
    );
    html
}

/// A static asset compiled into the binary.
#[derive(Debug, Clone, Copy)]
pub struct Asset {
    pub content_type: &'static str,
    pub body: &'static str,
}

/// The assets under `/static/`.
pub fn asset(name: &str) -> Option<Asset> {
    let (content_type, body) = match name {
        "app.js" => (
            "text/javascript; charset=utf-8",
            include_str!("static/app.js"),
        ),
        "signin.js" => (
            "text/javascript; charset=utf-8",
            include_str!("static/signin.js"),
        ),
        "callback.js" => (
            "text/javascript; charset=utf-8",
            include_str!("static/callback.js"),
        ),
        "style.css" => ("text/css; charset=utf-8", include_str!("static/style.css")),
        "favicon.svg" => ("image/svg+xml", include_str!("static/favicon.svg")),
        _ => return None,
    };
    Some(Asset { content_type, body })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_markup() {
        assert_eq!(
            escape("<script>\"x\" & 'y'</script>"),
            "&lt;script&gt;&quot;x&quot; &amp; &#39;y&#39;&lt;/script&gt;"
        );
    }

    #[test]
    fn config_cannot_close_its_script() {
        let v = serde_json::json!({"x": "</script><script>alert(1)</script>"});
        assert!(!script_json(&v).contains("</script>"));
    }
}
