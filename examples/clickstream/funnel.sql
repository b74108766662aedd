-- Sessions that reached each step of the funnel, and the share of viewing sessions.
SELECT event_type AS step,
       count(DISTINCT session_id) AS sessions,
       round(100.0 * count(DISTINCT session_id)
             / (SELECT count(DISTINCT session_id) FROM events WHERE event_type = 'product_view'), 1) AS pct_of_viewers
FROM events
GROUP BY event_type
ORDER BY sessions DESC, step
