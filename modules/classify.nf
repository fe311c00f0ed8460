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
    tuple val("${task.process}"), val('virnucpro'), eval('virnucpro-classify --version'), emit: versions_virnucpro, topic: versions
    tuple val("${task.process}"), val('torch'), eval("python3 -c 'from importlib.metadata import version; print(version(\"torch\"))'"), emit: versions_torch, topic: versions

    when:
    task.ext.when == null || task.ext.when

    script:
    def args = task.ext.args ?: ''
    """
    virnucpro-classify --features ${features} --classifier ${classifier} --sequences ${sequences} --outdir . ${args}
    """

    stub:
    """
    touch prediction_results.tsv prediction_results_highestscore.tsv sequence_summary.tsv
    """
}
