-- The quality gate, closed against two ways round it found by tests/integration/test_gate.py:
-- clearing review_required (in the same UPDATE as state = 'done', or just before it), and changing
-- maker_family in the same UPDATE so that a review by the real maker's family seems to come from elsewhere.

DROP TRIGGER jobs_review_gate;

CREATE TRIGGER jobs_review_gate
BEFORE UPDATE OF state ON jobs
WHEN NEW.state = 'done' AND (NEW.review_required = 1 OR OLD.review_required = 1) AND NEW.operator_approved = 0
    AND NOT EXISTS (
        SELECT 1 FROM reviews r
        WHERE r.job_id = NEW.id AND r.passed = 1 AND r.revision = NEW.revision
          AND r.reviewer_family <> COALESCE(NEW.maker_family, '')
          AND r.reviewer_family <> COALESCE(OLD.maker_family, '')
    )
BEGIN
    SELECT RAISE(ABORT, 'quality gate: a reviewed job needs a passing review by another model family');
END;

-- Once a job requires review, it keeps requiring it; the operator's approval is the only override.
CREATE TRIGGER jobs_review_required_kept
BEFORE UPDATE OF review_required ON jobs
WHEN OLD.review_required = 1 AND NEW.review_required <> 1
BEGIN
    SELECT RAISE(ABORT, 'quality gate: a job that requires review cannot stop requiring it');
END;
