-- One row per model, method, layer selection and site, ranked within each method × site
-- (rank 1 = best). The per-area rows answer "which model predicts VISp best?".
CREATE OR REPLACE VIEW model_ranking AS
SELECT
    rank() OVER (PARTITION BY s.method, s.layer_selection, s.site_kind, s.site ORDER BY s.score DESC) AS rank,
    s.method, s.layer_selection, s.site_kind, s.site,
    s.model_id, m.display_name, m.family, m.training_category, m.training,
    s.score, s.ci_low, s.ci_high, s.normalized_score,
    s.best_layer_index, s.best_layer_depth, s.n_neurons
FROM model_scores AS s
JOIN models AS m USING (model_id)
ORDER BY s.method, s.layer_selection, s.site_kind, s.site, rank;
