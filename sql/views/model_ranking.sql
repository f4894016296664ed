-- One row per model, method, layer selection and site, ranked within each method × site
-- (rank 1 = best). The per-area rows answer "which model predicts VISp best?"; `standing`
-- says whether a model is distinguishable from the best one there (paired bootstrap,
-- Benjamini-Hochberg over the site's pairs), so ties read as ties. Both ceilings: normalized_score
-- (split-half reliability) and normalized_interanimal (the other animals' score; above_interanimal
-- flags a model that predicts the area better than another mouse does). Rows whose ceiling is
-- below scoring.min_ceiling keep their rank by raw score but have no normalized_score and
-- say low_ceiling; n_low_ceiling counts the units left out of normalized_score.
CREATE OR REPLACE VIEW model_ranking AS
WITH ranked AS (
    SELECT rank() OVER (PARTITION BY method, layer_selection, modality, site_kind, site ORDER BY score DESC) AS rank,
           row_number() OVER (PARTITION BY method, layer_selection, modality, site_kind, site ORDER BY score DESC, model_id) AS position,
           s.*
    FROM model_scores AS s
),
best AS (
    SELECT method, layer_selection, modality, site_kind, site, model_id AS best_model_id
    FROM ranked
    WHERE position = 1
)
SELECT
    r.rank, r.method, r.layer_selection, r.modality, r.site_kind, r.site,
    r.model_id, m.display_name, m.family, m.training_category, m.training,
    r.score, r.ci_low, r.ci_high, r.normalized_score, r.noise_ceiling,
    r.normalized_interanimal, r.interanimal_consistency, r.above_interanimal, r.n_animals,
    r.best_layer_index, r.best_layer_depth, r.layer_stability, r.n_neurons, r.source,
    r.low_ceiling, r.n_low_ceiling,
    CASE WHEN r.model_id = b.best_model_id THEN NULL ELSE c.q_value END AS q_vs_best,
    CASE WHEN r.model_id = b.best_model_id THEN 'best'
         WHEN c.distinguishable THEN 'below best'
         WHEN c.distinguishable IS NULL THEN 'not compared'
         ELSE 'not distinguishable from best' END AS standing
FROM ranked AS r
JOIN models AS m USING (model_id)
JOIN best AS b USING (method, layer_selection, modality, site_kind, site)
LEFT JOIN model_comparisons AS c
  ON c.method = r.method AND c.layer_selection = r.layer_selection AND c.modality = r.modality
 AND c.site_kind = r.site_kind AND c.site = r.site
 AND ((c.model_a = r.model_id AND c.model_b = b.best_model_id) OR (c.model_b = r.model_id AND c.model_a = b.best_model_id))
ORDER BY r.method, r.layer_selection, r.modality, r.site_kind, r.site, r.rank, r.model_id;
