-- The Taskonomy encoders (one architecture, many tasks) ranked per method and area,
-- with their task cluster.
CREATE OR REPLACE VIEW taskonomy_ranking AS
SELECT
    rank() OVER (PARTITION BY s.method, s.layer_selection, s.modality, s.site ORDER BY s.score DESC) AS rank,
    s.method, s.layer_selection, s.modality, s.site AS area,
    s.model_id, m.display_name, m.training, m.task_cluster, s.score, s.ci_low, s.ci_high,
    s.normalized_score, s.low_ceiling
FROM model_scores AS s
JOIN models AS m USING (model_id)
WHERE m.source = 'taskonomy' AND s.site_kind = 'area'
ORDER BY s.method, s.layer_selection, s.modality, area, rank;
