// The self-contained report.html of one sample, from its CLASSIFY tables (CPU). Cheap: published
// beside the tables, not stored. ext.args (conf/modules.config): --chunk_size, --threshold.
process REPORT {
    tag "${meta.id}"
    label 'process_single'

    input:
    tuple val(meta), path(predictions), path(summary)

    output:
    tuple val(meta), path('report.html'), emit: report
    tuple val("${task.process}"), val('virnucpro'), eval('virnucpro-report --version'), emit: versions_virnucpro, topic: versions
    tuple val("${task.process}"), val('matplotlib'), eval("python3 -c 'from importlib.metadata import version; print(version(\"matplotlib\"))'"), emit: versions_matplotlib, topic: versions

    when:
    task.ext.when == null || task.ext.when

    script:
    def args = task.ext.args ?: ''
    """
    virnucpro-report --predictions ${predictions} --summary ${summary} --outdir . --name ${meta.id} ${args}
    """

    stub:
    """
    touch report.html
    """
}
