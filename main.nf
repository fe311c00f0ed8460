#!/usr/bin/env nextflow
/*
 * virnucpro: the VirNucPro viral-sequence identifier as a Nextflow DSL2 pipeline (SPEC section 4).
 *
 *   samples -> TRANSLATE (chunk, six-frame, scatter into shards)
 *     -> CHECK (virnucpro-check; a test run that asks for a GPU: extraction waits for it to pass)
 *     -> EXTRACT_DNABERT + EXTRACT_ESM per shard (one EXTRACT module, label 'gpu')
 *     -> MERGE per shard -> CLASSIFY per sample (its shards gathered, in order): the two
 *        prediction tables of the original and a per-sequence summary, published to outdir
 *     -> REPORT per sample: a self-contained report.html beside the tables
 *
 * Every process calls the bin/ tools; options, output prefixes, store paths and publishing are in
 * conf/modules.config; the helper functions are in subworkflows/local/utils_virnucpro_pipeline.
 * Each process reports its tools' versions on the `versions` topic, gathered into
 * <outdir>/pipeline_info/software_versions.yml.
 * Models, embeddings and features go to `params.store_dir` (storeDir) under a key of everything
 * that determines their content, so a rerun, or a run with more input, recomputes only what is new.
 */

include { validateParameters; paramsSummaryLog } from 'plugin/nf-schema'

include { TRANSLATE                    } from './modules/translate'
include { MAKE_TEST_MODELS             } from './modules/make_test_models'
include { RESOLVE_MODEL                } from './modules/resolve_model'
include { FETCH_MODEL                  } from './modules/fetch_model'
include { CHECK                        } from './modules/check'
include { EXTRACT as EXTRACT_DNABERT   } from './modules/extract'
include { EXTRACT as EXTRACT_ESM       } from './modules/extract'
include { MERGE                        } from './modules/merge'
include { CLASSIFY                     } from './modules/classify'
include { REPORT                       } from './modules/report'

include { shardItems; sampleMeta; featuresKey; folderDigest; digestCache; compileCache; checkFirst; isLocalModel; isCommit; hubKey; flag; samples; versionText; versionsYaml } from './subworkflows/local/utils_virnucpro_pipeline'

workflow {
    validateParameters()
    log.info paramsSummaryLog(workflow)
    if (!flag(params.make_test_models) && !params.classifier) {
        error "--classifier is required: ${params.chunk_size}_model.pth from the VirNucPro repository (a path or URL); see README, section 'The Nextflow pipeline'"
    }
    // The published classifiers say their chunk size in their names: a mismatch stops here, not after the embedding.
    def named = params.classifier ? (file(params.classifier).name =~ /^(\d+)_model\.pth$/) : null
    if (named && (named[0][1] as Integer) != (params.chunk_size as Integer)) {
        error "--classifier ${file(params.classifier).name} was trained on ${named[0][1]} bp chunks, but --chunk_size is ${params.chunk_size}: give --chunk_size ${named[0][1]} or the ${params.chunk_size}_model.pth classifier"
    }

    // Sample ids name the results folders and shards: they must be unique.
    def ch_samples = samples(params.input, params.input_fasta).toList().flatMap { items ->
        def ids = items.collect { item -> item[0].id }
        def repeated = ids.findAll { id -> ids.count(id) > 1 }.unique()
        if (repeated) {
            error "samples with the same id would overwrite each other's results: ${repeated.join(', ')}"
        }
        items
    }

    // Models: tiny test models, local folders as they are, or hub ids snapshotted into the store.
    def ch_dnabert
    def ch_esm
    def classifier
    if (flag(params.make_test_models)) {
        MAKE_TEST_MODELS()
        ch_dnabert = MAKE_TEST_MODELS.out.dnabert.map { folder -> [[kind: 'dnabert', id: "test-${folderDigest(folder, digestCache(params.store_dir, workflow.launchDir))}".toString()], folder] }.first()
        ch_esm = MAKE_TEST_MODELS.out.esm.map { folder -> [[kind: 'esm', id: "test-${folderDigest(folder, digestCache(params.store_dir, workflow.launchDir))}".toString()], folder] }.first()
        classifier = params.classifier ? channel.value(file(params.classifier, checkIfExists: true)) : ((params.chunk_size as Integer) == 300 ? MAKE_TEST_MODELS.out.classifier_300 : MAKE_TEST_MODELS.out.classifier).first()
    } else {
        // A local folder is used as it is (key: its digest); a hub id is resolved to a commit
        // (unless its revision is one), then snapshotted once into the store under that commit.
        def requests = [[kind: 'dnabert', model: params.dnabert_model, revision: params.dnabert_revision],
                        [kind: 'esm', model: params.esm_model, revision: params.esm_revision]]
        def local = requests.findAll { request -> isLocalModel(request.model) }.collect { request ->
            [[kind: request.kind, id: "local-${folderDigest(file(request.model), digestCache(params.store_dir, workflow.launchDir))}".toString()], file(request.model)]
        }
        def hub = requests.findAll { request -> !isLocalModel(request.model) }
        RESOLVE_MODEL(channel.fromList(hub.findAll { request -> !isCommit(request.revision) }))
        def ch_hub = RESOLVE_MODEL.out.commit
            .mix(channel.fromList(hub.findAll { request -> isCommit(request.revision) }.collect { request -> [request, request.revision] }))
            .map { request, commit -> request + [commit: commit, id: hubKey(request.model, commit)] }
        FETCH_MODEL(ch_hub)
        def ch_models = FETCH_MODEL.out.model.mix(channel.fromList(local))
        ch_dnabert = ch_models.filter { model_meta, folder -> model_meta.kind == 'dnabert' }.first()
        ch_esm = ch_models.filter { model_meta, folder -> model_meta.kind == 'esm' }.first()
        classifier = channel.value(file(params.classifier, checkIfExists: true))
    }

    // Scatter: one item per shard pair, its meta carrying the shard's name, number and md5s.
    TRANSLATE(ch_samples)
    def ch_shards = TRANSLATE.out.shards.flatMap { meta, nucleotides, proteins, checksums ->
        shardItems(meta, nucleotides, proteins, checksums)
    }

    // A test run on a GPU checks the node first (virnucpro-check); extraction waits for it to pass.
    def compile_cache = compileCache(params.store_dir)
    if (checkFirst(params.make_test_models, params.device)) {
        CHECK(ch_dnabert, ch_esm, compile_cache)
        ch_dnabert = CHECK.out.report.combine(ch_dnabert).map { report, model_meta, folder -> [model_meta, folder] }.first()
        ch_esm = CHECK.out.report.combine(ch_esm).map { report, model_meta, folder -> [model_meta, folder] }.first()
    }

    EXTRACT_DNABERT(ch_shards.map { meta, nucleotide, protein -> [meta, nucleotide] }, ch_dnabert, compile_cache)
    EXTRACT_ESM(ch_shards.map { meta, nucleotide, protein -> [meta, protein] }, ch_esm, compile_cache)
    def ch_embeddings = EXTRACT_DNABERT.out.embeddings
        .join(EXTRACT_ESM.out.embeddings, failOnMismatch: true, failOnDuplicate: true)
        .map { meta, dnabert, esm -> [meta + [features_key: featuresKey(dnabert, esm)], dnabert, esm] }
    MERGE(ch_embeddings)

    // Gather: each sample's features in shard order, released as soon as its last shard is merged;
    // the sample's meta is the one TRANSLATE got, unchanged.
    def ch_features = MERGE.out.features
        .map { meta, features -> [groupKey(sampleMeta(meta), meta.shard_count), [meta.shard_index, features]] }
        .groupTuple()
        .map { key, shards -> [key.getGroupTarget(), shards.sort { shard -> shard[0] }.collect { shard -> shard[1] }] }
        .join(TRANSLATE.out.sequences, failOnMismatch: true, failOnDuplicate: true)
    CLASSIFY(ch_features, classifier)
    REPORT(CLASSIFY.out.predictions.join(CLASSIFY.out.summary, failOnMismatch: true, failOnDuplicate: true))

    // Every process puts [process, tool, version] on the `versions` topic: one file of them all.
    channel.topic('versions')
        .map { process, tool, version -> [process, tool, versionText(version)] }
        .unique()
        .toList()
        .map { entries -> versionsYaml(entries, workflow.manifest.version, workflow.nextflow.version) }
        .collectFile(name: 'software_versions.yml', storeDir: "${params.outdir}/pipeline_info")
}
