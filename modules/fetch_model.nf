// Snapshot a model from the Hugging Face hub once (virnucpro-fetch-model), at the commit
// RESOLVE_MODEL found, so cluster and cloud nodes read it from the store instead of each
// downloading it. conf/modules.config stores it under `<store_dir>/models/<model_meta.id>`
// (`<id with / as -->@<commit>`). Not run for a local model folder (main.nf passes the folder).
// Versions: storeDir keeps only val and path outputs (Nextflow skips the store for an eval output),
// so the versions are written to files stored with the content: a store hit reports the ones that made it.
process FETCH_MODEL {
    tag "${model_meta.id}"
    label 'process_single'

    input:
    val(model_meta)

    output:
    tuple val(model_meta), path('model'), emit: model
    tuple val("${task.process}"), val('virnucpro'), path('virnucpro.version'), emit: versions_virnucpro, topic: versions
    tuple val("${task.process}"), val('huggingface_hub'), path('huggingface_hub.version'), emit: versions_huggingface_hub, topic: versions

    when:
    task.ext.when == null || task.ext.when

    script:
    // Configs, tokenizer files and one weight format (safetensors, else .bin), at that commit
    // (recorded in model/virnucpro_model.json).
    def args = task.ext.args ?: ''
    """
    virnucpro-fetch-model --model ${model_meta.model} --revision ${model_meta.commit} --outdir model ${args}
    virnucpro-fetch-model --version > virnucpro.version
    python3 -c 'from importlib.metadata import version; print(version(\"huggingface_hub\"))' > huggingface_hub.version
    """

    stub:
    """
    mkdir -p model
    touch model/config.json model/virnucpro_model.json
    virnucpro-fetch-model --version > virnucpro.version
    python3 -c 'from importlib.metadata import version; print(version(\"huggingface_hub\"))' > huggingface_hub.version
    """
}
