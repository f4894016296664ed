-- RSA, CKA and regression score the same layers of each model, and only layers the model has.
WITH rsa AS (SELECT DISTINCT model_id, layer_index FROM rsa_scores),
     cka AS (SELECT DISTINCT model_id, layer_index FROM cka_scores),
     reg AS (SELECT DISTINCT model_id, layer_index FROM regression_scores)
SELECT coalesce(rsa.model_id, reg.model_id) AS model_id,
       coalesce(rsa.layer_index, reg.layer_index) AS layer_index,
       CASE WHEN rsa.model_id IS NULL THEN 'regression score without RSA score'
            ELSE 'RSA score without regression score' END AS problem
FROM rsa FULL OUTER JOIN reg USING (model_id, layer_index)
WHERE rsa.model_id IS NULL OR reg.model_id IS NULL
UNION ALL
SELECT coalesce(rsa.model_id, cka.model_id), coalesce(rsa.layer_index, cka.layer_index),
       CASE WHEN rsa.model_id IS NULL THEN 'CKA score without RSA score'
            ELSE 'RSA score without CKA score' END
FROM rsa FULL OUTER JOIN cka USING (model_id, layer_index)
WHERE rsa.model_id IS NULL OR cka.model_id IS NULL
UNION ALL
SELECT r.model_id, r.layer_index, 'score for an unknown layer' AS problem
FROM rsa AS r
LEFT JOIN layers AS l USING (model_id, layer_index)
WHERE l.model_id IS NULL;
