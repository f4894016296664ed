-- Each architecture scored both trained and untrained: the difference trained − random.
-- Pairs exist only where both variants were run.
CREATE OR REPLACE VIEW trained_vs_random AS
SELECT
    t.method, t.layer_selection, t.modality, t.site AS area, mt.architecture,
    t.model_id AS trained_model_id, r.model_id AS random_model_id,
    t.score AS trained_score, r.score AS random_score,
    t.score - r.score AS difference
FROM model_scores AS t
JOIN models AS mt ON mt.model_id = t.model_id AND mt.training_category <> 'random'
JOIN models AS mr ON mr.architecture = mt.architecture AND mr.source = mt.source AND mr.training_category = 'random'
JOIN model_scores AS r
  ON r.model_id = mr.model_id AND r.method = t.method AND r.layer_selection = t.layer_selection
 AND r.modality = t.modality AND r.site_kind = t.site_kind AND r.site = t.site
WHERE t.site_kind = 'area'
ORDER BY t.method, t.layer_selection, t.modality, area, difference DESC;
