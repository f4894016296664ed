-- Do RSA and regression agree on which models are best? Spearman rank correlation of the
-- two methods' model scores in each site (Pearson r of the ranks).
CREATE OR REPLACE VIEW method_agreement AS
WITH ranked AS (
    SELECT model_id, method, layer_selection, modality, site_kind, site,
           rank() OVER (PARTITION BY method, layer_selection, modality, site_kind, site ORDER BY score) AS score_rank
    FROM model_scores
),
paired AS (
    SELECT a.layer_selection, a.modality, a.site_kind, a.site, a.score_rank AS rsa_rank, b.score_rank AS regression_rank
    FROM ranked AS a
    JOIN ranked AS b
      ON a.model_id = b.model_id AND a.layer_selection = b.layer_selection AND a.modality = b.modality
     AND a.site_kind = b.site_kind AND a.site = b.site
    WHERE a.method = 'rsa' AND b.method = 'regression'
)
SELECT layer_selection, modality, site_kind, site, count(*) AS n_models,
       corr(rsa_rank, regression_rank) AS spearman_r
FROM paired
GROUP BY layer_selection, modality, site_kind, site
ORDER BY layer_selection, modality, site_kind, site;
