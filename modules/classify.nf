// Score every frame of one sample with the MLP and call each chunk and each sequence (CPU).
// Gathers the sample's per-shard features in shard order, so a sequence whose chunks fell into
// two shards still gets one verdict. Cheap next to extraction: published, not stored.
// ext.args (conf/modules.config): --threshold when given.
process CLASSIFY {
    tag "${meta.id}"
    label 'process_single'

    input:
    tuple val(meta), path(features, stageAs: '?/*'), path(sequences)
    path classifier

    output:
    tuple val(meta), path('prediction_results.tsv'), emit: predictions
    tuple val(meta), path('prediction_results_highestscore.tsv'), emit: highestscore
    tuple val(meta), path('sequence_summary.tsv'), emit: summary
    path 'versions.yml', emit: versions

    when:
    task.ext.when == null || task.ext.when

    script:
    def args = task.ext.args ?: ''
    """
    virnucpro-classify --features ${features} --classifier ${classifier} --sequences ${sequences} --outdir . ${args}

    cat <<-END_VERSIONS > versions.yml
    "${task.process}":
        virnucpro: \$(python3 -c 'import virnucpro; print(virnucpro.__version__)')
        torch: \$(python3 -c 'import torch; print(torch.__version__)')
    END_VERSIONS
    """

    stub:
    """
    touch prediction_results.tsv prediction_results_highestscore.tsv sequence_summary.tsv

    cat <<-END_VERSIONS > versions.yml
    "${task.process}":
        virnucpro: stub
    END_VERSIONS
    """
}
